"""What happens at the end of DATA: checks, the headers we prepend, durable storage, the logs.

The received bytes are kept exactly as they arrived; Received: and Authentication-Results: are
prepended as bytes (a parse and re-serialise with the email package would re-fold headers and
break DKIM). store_message returns only when every copy is durable, and only then do we
answer 250.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from email.utils import formatdate

from django.conf import settings

from domains.models import Domain
from mailhost.addresses import AddressError, parse_address

from . import db_writes, replies, sender_checks, smtp_policy
from .models import MessageLog, QueuedMessage, new_queue_id
from .short_cache import DirectoryCache
from .storage import OverQuota, store_message

log = logging.getLogger("mailhost.smtp")


@dataclass
class Transaction:
    """One MAIL..DATA exchange as the service saw it; filled in by the handler's hooks."""

    submission: bool
    client_ip: str
    helo: str = ""
    tls: str = ""
    auth_user: str = ""
    mail_from: str = ""
    recipients: list[str] = field(default_factory=list)
    mailboxes: dict[int, object] = field(default_factory=dict)
    remote: dict[str, None] = field(default_factory=dict)
    domain_ids: set[int] = field(default_factory=set)
    queue_id: str = field(default_factory=new_queue_id)
    size: int = 0
    subject: str = ""
    result: str = ""
    reply: str = ""

    @property
    def sender(self) -> str:
        return "" if smtp_policy.is_null_sender(self.mail_from) else self.mail_from

    def add_recipient(self, address: str, decision: smtp_policy.RcptDecision) -> None:
        self.recipients.append(address)
        if decision.hosted_domain_id:
            self.domain_ids.add(decision.hosted_domain_id)
        if decision.resolution is not None:
            for mailbox in decision.resolution.mailboxes:
                self.mailboxes[mailbox.pk] = mailbox
            self.remote.update(dict.fromkeys(decision.resolution.remote))
        self.remote.update(dict.fromkeys(decision.remote))


def received_header(tx: Transaction, recipient: str | None) -> bytes:
    """RFC 5321 4.4 trace header; `with` per RFC 3848 (ESMTPS = TLS, A = authenticated)."""
    protocol = "ESMTP" + ("S" if tx.tls else "") + ("A" if tx.auth_user else "")
    helo = _printable(tx.helo) or "unknown"
    lines = [f"Received: from {helo} ([{tx.client_ip}])",
             f"\tby {settings.MAIL_HOSTNAME} (mailhost) with {protocol}"
             + (f" ({tx.tls})" if tx.tls else "")]
    if tx.auth_user:
        lines[-1] += f" (authenticated as {_printable(tx.auth_user)})"
    lines.append(f"\tid {tx.queue_id}" + (f" for <{_printable(recipient)}>" if recipient else "")
                 + f"; {formatdate(localtime=False)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", errors="replace")


def _printable(text: str) -> str:
    if text.isprintable():  # nearly always: no character to replace (CR and LF are not printable)
        return text
    return "".join(ch if ch.isprintable() and ch not in "\r\n" else "?" for ch in text or "")


def tls_description(ssl_object) -> str:
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher()
    return f"version={ssl_object.version()} cipher={cipher[0] if cipher else 'unknown'}"


def finish(tx: Transaction, content: bytes, identity=None) -> str:
    """Check, stamp and store one message; return the final reply. Runs in a worker thread."""
    tx.size = len(content)
    tx.subject = _subject(content)
    reply = smtp_policy.bare_line_ending_reply(content)
    headers = b""
    if reply is None and tx.submission:
        reply = smtp_policy.submission_headers_reply(content, identity)
    if reply is None and not tx.submission:
        checks = sender_checks.check_sender(tx.client_ip, tx.helo, tx.mail_from, content)
        headers = checks.header(settings.MAIL_HOSTNAME)
        if checks.reject:
            reply = replies.DMARC_REJECT
    if reply is None:
        reply = _store(tx, received_header(tx, tx.recipients[0] if len(tx.recipients) == 1 else None)
                       + headers + content)
    tx.reply = reply
    tx.result = "accepted" if reply.startswith("250") else "refused"
    try:
        record(tx)
    except Exception:   # the message is stored: a logging failure must not turn 250 into a retry
        log.exception("could not record transaction %s", tx.queue_id)
    return reply


def _store(tx: Transaction, data: bytes) -> str:
    source = QueuedMessage.Source.SUBMISSION if tx.submission else QueuedMessage.Source.INBOUND
    try:
        stored = store_message(tx.sender, list(tx.mailboxes.values()), list(tx.remote), data,
                               source=source, auth_user=tx.auth_user)
    except OverQuota:
        return replies.MAILBOX_FULL
    if stored.queued is not None:
        tx.queue_id = stored.queued.queue_id
    return replies.accepted(tx.queue_id)


def _subject(content: bytes) -> str:
    block = smtp_policy.header_block(content[:65536])
    for line in block.split(b"\r\n"):
        if line[:8].lower() == b"subject:":
            return line[8:].strip().decode("utf-8", errors="replace")[:255]
    return ""


def record(tx: Transaction) -> None:
    """The structured log line and one MessageLog row per hosted domain involved."""
    if log.isEnabledFor(logging.INFO):
        log.info("smtp transaction %s", json.dumps({
            "queue_id": tx.queue_id, "listener": "submission" if tx.submission else "inbound",
            "client": tx.client_ip, "helo": tx.helo, "tls": tx.tls, "auth_user": tx.auth_user,
            "from": tx.mail_from, "recipients": tx.recipients, "size": tx.size, "result": tx.result,
            "reply": tx.reply,
        }, ensure_ascii=False))
    domain_ids = set(tx.domain_ids)
    sender_domain = _hosted_domain_id(tx.sender)
    if sender_domain:
        domain_ids.add(sender_domain)
    direction = (MessageLog.Direction.SUBMISSION if tx.submission else MessageLog.Direction.INBOUND).value
    db_writes.insert_new(MessageLog, [
        {"domain_id": domain_id, "direction": direction, "result": tx.result, "queue_id": tx.queue_id,
         "client_ip": tx.client_ip or None, "helo": tx.helo[:255], "tls": tx.tls[:64],
         "auth_user": tx.auth_user[:254], "mail_from": tx.mail_from[:254],
         "recipients": ", ".join(tx.recipients), "subject": tx.subject, "size": tx.size, "reply": tx.reply}
        for domain_id in sorted(domain_ids)
    ])


_domain_ids = DirectoryCache("sender-domain-ids", Domain)


def _hosted_domain_id(address: str) -> int | None:
    if not address:
        return None
    try:
        name = parse_address(address).domain
    except AddressError:
        return None
    found = _domain_ids.get(name, default=False)
    if found is False:
        found = Domain.objects.filter(name=name).values_list("pk", flat=True).first()
        _domain_ids.put(name, found)
    return found


def record_refused_rcpt(tx: Transaction, address: str, decision: smtp_policy.RcptDecision) -> None:
    """A refused recipient in a hosted domain is worth a portal row (typos, dictionary attacks)."""
    if not decision.hosted_domain_id:
        return
    refused = Transaction(submission=tx.submission, client_ip=tx.client_ip, helo=tx.helo, tls=tx.tls,
                          auth_user=tx.auth_user, mail_from=tx.mail_from, recipients=[address],
                          domain_ids={decision.hosted_domain_id}, result="refused", reply=decision.reply)
    record(refused)
