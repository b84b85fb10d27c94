"""Sending from webmail: the same sender rules and acceptance path as SMTP submission.

The message is built with the email package, the sender must be one the mailbox may send as
(Mailbox.can_send_as, as for SMTP AUTH), every recipient goes through mailboxes.directory.resolve
(unknown local users refused like RCPT's 550 5.1.1), and delivery.storage.store_message makes it
durable: Maildir copies for local mailboxes, queue rows for remote ones. A copy goes to Sent.
"""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass, field
from email.message import EmailMessage

from django.conf import settings

from delivery.models import QueuedMessage
from delivery.storage import OverQuota, Stored, store_message
from mailboxes.directory import Verdict, resolve
from mailboxes.models import Mailbox
from mailhost.addresses import AddressError, parse_address

from .maildir_reader import Maildir


class SendError(Exception):
    """The message cannot be sent as composed; the text is shown to the user in the form."""


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Draft:
    from_address: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    attachments: list[Upload] = field(default_factory=list)
    in_reply_to: str = ""
    references: str = ""


def split_addresses(value: str) -> list[str]:
    return [addr for _name, addr in email.utils.getaddresses([value]) if addr]


def build_message(mailbox: Mailbox, draft: Draft) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = email.utils.formataddr((mailbox.display_name, draft.from_address))
    msg["To"] = ", ".join(draft.to)
    if draft.cc:
        msg["Cc"] = ", ".join(draft.cc)
    msg["Subject"] = draft.subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=mailbox.domain.name)
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
        msg["References"] = f"{draft.references} {draft.in_reply_to}".strip()
    msg["User-Agent"] = "mailhost webmail"
    msg.set_content(draft.body or "")
    for upload in draft.attachments:
        maintype, _, subtype = (upload.content_type or "application/octet-stream").partition("/")
        msg.add_attachment(upload.data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=upload.filename)
    return msg


def route(recipients: list[str]) -> tuple[list[Mailbox], list[str]]:
    """Local mailboxes and remote addresses for the recipients, or SendError naming the bad one."""
    local: dict[int, Mailbox] = {}
    remote: dict[str, None] = {}
    for rcpt in recipients:
        resolution = resolve(rcpt)
        if resolution.verdict is Verdict.NOT_HOSTED:
            try:
                remote[str(parse_address(rcpt))] = None
            except AddressError as exc:
                raise SendError(f"{rcpt}: {exc}") from exc
        elif resolution.ok:
            local.update((m.pk, m) for m in resolution.mailboxes)
            remote.update(dict.fromkeys(resolution.remote))
        else:
            raise SendError(f"{rcpt}: {resolution.reason or resolution.verdict.value}")
    return list(local.values()), list(remote)


def send(mailbox: Mailbox, draft: Draft) -> Stored:
    if not mailbox.can_send_as(draft.from_address):
        raise SendError(f"you may not send as {draft.from_address}")
    recipients = list(dict.fromkeys(draft.to + draft.cc + draft.bcc))
    if not recipients:
        raise SendError("add at least one recipient")
    if len(recipients) > settings.SMTP_MAX_RECIPIENTS:
        raise SendError(f"at most {settings.SMTP_MAX_RECIPIENTS} recipients per message")
    local, remote = route(recipients)
    msg = build_message(mailbox, draft)
    received = (f"Received: from webmail (authenticated as {mailbox.address})\r\n"
                f"\tby {settings.MAIL_HOSTNAME} (mailhost) with HTTPS; {email.utils.formatdate()}\r\n")
    data = received.encode() + msg.as_bytes(policy=email.policy.SMTP)
    if len(data) > settings.SMTP_MAX_MESSAGE_SIZE:
        raise SendError(f"the message is larger than {settings.SMTP_MAX_MESSAGE_SIZE} bytes")
    full = [m.address for m in local if m.is_over_quota(len(data))]
    if full:
        raise SendError(f"{', '.join(full)}: mailbox full")
    try:
        stored = store_message(draft.from_address, local, remote, data,
                               source=QueuedMessage.Source.WEBMAIL, auth_user=mailbox.address)
    except OverQuota as exc:
        raise SendError(f"{exc.mailbox.address}: mailbox full") from exc
    Maildir(mailbox.maildir).store("Sent", data, flags="S")
    return stored
