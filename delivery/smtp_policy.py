"""Who may relay, who may send as whom, and what each RCPT gets: plain functions, one reply each.

Relay permission depends only on authentication, never on the client address (Mailu #1099:
a proxy or NAT that hides client IPs turns an IP allow-list into an open relay). Address
syntax goes through mailhost.addresses, the one place that refuses routing tricks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.headerregistry import Address as HeaderAddress
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY

from mailboxes.directory import Resolution, Verdict, hosted_domain_for, resolve
from mailhost.addresses import AddressError, parse_address

from . import replies
from .short_cache import DirectoryCache

_VERDICT_REPLIES = {
    Verdict.UNKNOWN_USER: replies.UNKNOWN_USER,
    Verdict.NOT_HOSTED: replies.RELAY_DENIED,
    Verdict.BAD_ADDRESS: replies.BAD_DESTINATION,
    Verdict.DISABLED: replies.MAILBOX_DISABLED,
}
NULL_SENDER = "<>"


@dataclass
class RcptDecision:
    reply: str
    resolution: Resolution | None = None
    remote: list[str] = field(default_factory=list)
    hosted_domain_id: int | None = None

    @property
    def accepted(self) -> bool:
        return self.reply == replies.RECIPIENT_OK


def is_null_sender(address: str) -> bool:
    return address in ("", NULL_SENDER)


def is_valid_utf8(text: str) -> bool:
    """aiosmtpd decodes SMTPUTF8 arguments with surrogateescape: invalid UTF-8 shows up as
    lone surrogates, which no database, header or log line can hold. ASCII text, nearly every
    address and HELO name, is answered without a Python loop over its characters."""
    return text.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in text)


def clean_text(text: str) -> str:
    return text if is_valid_utf8(text) else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def rcpt_decision(address: str, *, authenticated: bool, without_database: bool = False) -> RcptDecision | None:
    """The RCPT verdict. Hosted recipients resolve through the directory; anything else is
    relaying, allowed only for an authenticated identity and only to a well-formed address.
    `without_database`: None unless the verdict needs no query (see `resolve`)."""
    try:
        if not is_valid_utf8(address):
            raise AddressError("address is not valid UTF-8")
        addr = parse_address(address)
    except AddressError:
        return RcptDecision(replies.BAD_DESTINATION)
    resolution = resolve(str(addr), without_database=without_database)
    if resolution is None:
        return None
    if resolution.verdict is Verdict.NOT_HOSTED:
        if authenticated:
            return RcptDecision(replies.RECIPIENT_OK, remote=[str(addr)])
        return RcptDecision(replies.RELAY_DENIED)
    if resolution.verdict is Verdict.BAD_ADDRESS:
        return RcptDecision(replies.BAD_DESTINATION)
    domain_id = _domain_id(addr.domain, resolution)
    if not resolution.ok:
        return RcptDecision(_VERDICT_REPLIES[resolution.verdict], resolution, hosted_domain_id=domain_id)
    if any(mailbox.is_over_quota() for mailbox in resolution.mailboxes):
        return RcptDecision(replies.MAILBOX_FULL, resolution, hosted_domain_id=domain_id)
    return RcptDecision(replies.RECIPIENT_OK, resolution, hosted_domain_id=domain_id)


_rcpt_cache = DirectoryCache("rcpt-verdicts")


def rcpt_cache() -> DirectoryCache:
    return _rcpt_cache


def cached_rcpt_decision(address: str, *, authenticated: bool) -> RcptDecision | None:
    """A verdict rcpt_decision gave less than SMTP_DIRECTORY_CACHE seconds ago, or None.

    Quota is checked again on every hit against the cached mailbox objects, which
    storage.deliver_local keeps counting, so a mailbox filling up is refused at once."""
    decision = rcpt_cache().get((address, authenticated))
    if decision is not None and decision.accepted and decision.resolution is not None and any(
            mailbox.is_over_quota() for mailbox in decision.resolution.mailboxes):
        return RcptDecision(replies.MAILBOX_FULL, decision.resolution, hosted_domain_id=decision.hosted_domain_id)
    return decision


def remember_rcpt_decision(address: str, decision: RcptDecision, *, authenticated: bool) -> None:
    if decision.reply != replies.MAILBOX_FULL:
        rcpt_cache().put((address, authenticated), decision)


def _domain_id(name: str, resolution: Resolution) -> int | None:
    """The hosted domain the message log files this recipient under (saves a query when the
    address is a mailbox of that very domain, the common case under load)."""
    for mailbox in resolution.mailboxes:
        if mailbox.domain.name == name:
            return mailbox.domain_id
    domain = hosted_domain_for(name)
    return domain.pk if domain else None


def inbound_sender_reply(address: str) -> str:
    """Inbound MAIL FROM: any well-formed sender or the null sender; filtering decides later."""
    if is_null_sender(address):
        return replies.SENDER_OK
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or not is_valid_utf8(address) or any(
            ord(ch) < 32 or ch == "\x7f" for ch in address):
        return replies.BAD_SENDER_ADDRESS
    return replies.SENDER_OK


def submission_sender_reply(address: str, identity, *, without_database: bool = False) -> str | None:
    """Submission MAIL FROM: only addresses the logged-in identity may send as; never <>.

    `without_database`: answer only if no query is needed (the session remembers the send-as
    verdict), else None, so the event loop can skip a worker-thread round trip per message."""
    if identity is None:
        return replies.AUTH_REQUIRED
    if is_null_sender(address):
        return replies.NULL_SENDER_NOT_ALLOWED
    if not is_valid_utf8(address):
        return replies.SENDER_NOT_ALLOWED
    try:
        parse_address(address)
    except AddressError:
        return replies.SENDER_NOT_ALLOWED
    allowed = identity.remembered_send_as(address) if without_database else identity.can_send_as(address)
    if allowed is None:
        return None
    return replies.SENDER_OK if allowed else replies.SENDER_NOT_ALLOWED


def header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


_FIELD_NAME = re.compile(rb"[!-9;-~]+:")     # RFC 5322 ftext, as the email package reads it
_DOT_ATOM_ADDRESS = rb"[A-Za-z0-9_+=-]+(?:\.[A-Za-z0-9_+=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_FROM = re.compile(rb"[ \t]*(?:[A-Za-z0-9_'-]+(?:[ \t]+[A-Za-z0-9_'-]+)*[ \t]*)?<(" + _DOT_ATOM_ADDRESS
                         + rb")>[ \t]*|[ \t]*(" + _DOT_ATOM_ADDRESS + rb")[ \t]*")
_PARSE = object()


def header_sender_addresses(data: bytes) -> tuple[list[str], list[str]] | None:
    """(From: addresses, Sender: addresses) of a message, None when From: is not exactly one
    header with one address (RFC 5322 allows several, but then Sender: would be required and
    a submission server cannot tell which one the user meant)."""
    block = header_block(data)
    found = _plain_sender_addresses(block)
    return _parsed_sender_addresses(block) if found is _PARSE else found


def _parsed_sender_addresses(block: bytes) -> tuple[list[str], list[str]] | None:
    headers = BytesHeaderParser(policy=SMTP_POLICY).parsebytes(block)
    try:    # the parser itself raises on some malformed headers (IndexError in get_angle_addr)
        froms = headers.get_all("From") or []
        if len(froms) != 1:
            return None
        from_addresses = [_addr_spec(a) for a in froms[0].addresses]
        sender_addresses = [_addr_spec(a) for h in headers.get_all("Sender") or [] for a in h.addresses]
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    if len(from_addresses) != 1 or not from_addresses[0]:
        return None
    return from_addresses, sender_addresses


def _plain_sender_addresses(block: bytes):
    """The common shape (unfolded ASCII headers, one `From: Name <a@b>` or `From: a@b`, no
    Sender:) read without the email package's header parser, which costs a millisecond a
    message; anything else returns _PARSE and goes through the parser. Both give the same answer
    for this shape (tests/delivery/test_smtp_fast_paths.py compares them)."""
    crlf = block.count(b"\r\n")
    if not block.endswith(b"\r\n") or block.count(b"\r") != crlf or block.count(b"\n") != crlf:
        return _PARSE
    froms = []
    previous_is_sender_field = True     # a folded first line is not the common shape either
    for line in block.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if previous_is_sender_field:
                return _PARSE
            continue
        name = _FIELD_NAME.match(line)
        if name is None:
            return _PARSE
        field_name = line[:name.end() - 1].lower()
        previous_is_sender_field = field_name in (b"from", b"sender")
        if field_name == b"sender":
            return _PARSE
        if field_name == b"from":
            froms.append(line[name.end():])
    if len(froms) != 1:
        return _PARSE
    match = _PLAIN_FROM.fullmatch(froms[0])
    if match is None:
        return _PARSE
    return [(match.group(1) or match.group(2)).decode("ascii")], []


def _addr_spec(address: HeaderAddress) -> str:
    return address.addr_spec


def submission_headers_reply(data: bytes, identity) -> str | None:
    """None when From: and every Sender: are addresses the identity may send as; else a reply."""
    found = header_sender_addresses(data)
    if found is None:
        return replies.FROM_MISSING
    from_addresses, sender_addresses = found
    for address in from_addresses + sender_addresses:
        if not identity.can_send_as(address):
            return replies.FROM_NOT_ALLOWED
    return None


def bare_line_ending_reply(data: bytes) -> str | None:
    """Refuse any CR or LF that is not part of a CRLF pair (SMTP smuggling, CVE-2023-51766)."""
    pairs = data.count(b"\r\n")
    if data.count(b"\r") != pairs or data.count(b"\n") != pairs:
        return replies.BARE_LINE_ENDING
    return None


def too_many_recipients(count: int, limit: int) -> bool:
    return count >= limit
