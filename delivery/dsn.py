"""Delivery status notifications (RFC 3464): bounces and delay warnings to the envelope sender.

A DSN goes out with the null sender `<>` (RFC 5321 4.5.5), so a DSN that cannot be delivered
produces no further DSN; and no DSN is ever made for mail whose sender is already null (other
DSNs, auto-replies). That is what keeps bounces from looping.
"""

from __future__ import annotations

import email.utils
import logging
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from django.conf import settings
from django.utils import timezone

from .models import QueuedMessage, QueuedRecipient

log = logging.getLogger(__name__)


def _status(reply: str, failed: bool) -> str:
    parts = reply.split()
    if len(parts) > 1 and parts[1][:1] in "245" and parts[1].count(".") == 2:
        return parts[1]
    return "5.0.0" if failed else "4.0.0"


def _address_field(address: str) -> str:
    """An address in a DSN field: `rfc822; a@b`, or for an internationalized one RFC 6533's
    `utf-8` type in its ASCII form (`jos\\x{E9}@b`), which keeps the report plain
    message/delivery-status that every reader parses; the email package would otherwise
    RFC 2047-encode the whole field into something no DSN reader recognises."""
    if address.isascii():
        return f"rfc822; {address}"
    return "utf-8; " + "".join(c if "!" <= c <= "~" and c not in "\\+=" else f"\\x{{{ord(c):X}}}" for c in address)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()


def build(message: QueuedMessage, rcpts: list[QueuedRecipient], action: str, to: str = "") -> bytes:
    """The multipart/report: a human part, message/delivery-status, and the original headers."""
    failed = action == "failed"
    host = settings.MAIL_HOSTNAME
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{host}>"
    report["To"] = to or message.sender
    report["Subject"] = ("Undelivered Mail Returned to Sender" if failed
                         else "Delayed Mail (still being retried)")
    report["Date"] = email.utils.formatdate(usegmt=True)
    report["Message-ID"] = email.utils.make_msgid(domain=host)
    report["Auto-Submitted"] = "auto-replied"
    lines = [
        f"This is the mail system at {host}.",
        "",
        ("Your message could not be delivered to the recipients below:" if failed else
         "Your message has not been delivered yet to the recipients below; the server keeps trying."),
        "",
    ]
    lines += [f"<{r.address}>: {r.last_reply}" for r in rcpts]
    report.attach(MIMEText("\n".join(lines) + "\n", "plain", "utf-8"))

    status = MIMEBase("message", "delivery-status")
    per_message = (f"Reporting-MTA: dns; {host}\r\nX-Mailhost-Queue-ID: {message.queue_id}\r\n"
                   f"Arrival-Date: {email.utils.format_datetime(message.created_at)}\r\n")
    blocks = [per_message]
    for r in rcpts:
        block = ""
        if r.original_address:
            block += f"Original-Recipient: {_address_field(r.original_address)}\r\n"
        block += (f"Final-Recipient: {_address_field(r.address)}\r\nAction: {action}\r\n"
                  f"Status: {_status(r.last_reply, failed)}\r\n")
        if r.last_reply[:1] in "45":
            block += f"Diagnostic-Code: smtp; {_ascii(' '.join(r.last_reply.split()))}\r\n"
        block += f"Last-Attempt-Date: {email.utils.format_datetime(timezone.now())}\r\n"
        if not failed:
            block += f"Will-Retry-Until: {email.utils.format_datetime(_expiry(message))}\r\n"
        blocks.append(block)
    # The email package writes message/delivery-status from a list of header blocks.
    status.set_payload([email.message_from_string(b.replace("\r\n", "\n")) for b in blocks])
    report.attach(status)

    # The original's headers only (RFC 6522 allows text/rfc822-headers): enough to recognise
    # the message without mailing a large body back.
    original = bytes(message.data)
    end = original.find(b"\r\n\r\n")
    headers_part = MIMEBase("text", "rfc822-headers")
    headers_part.set_payload((original[: end + 2] if end >= 0 else original).decode("utf-8", "replace"))
    report.attach(headers_part)
    return report.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _expiry(message: QueuedMessage):
    import datetime as dt

    return message.created_at + dt.timedelta(seconds=settings.QUEUE_LIFETIME)


def send(rcpt: QueuedRecipient, action: str) -> bool:
    """Send a DSN about one recipient to the message's envelope sender; False when none is due."""
    from mailboxes.directory import Verdict, resolve

    from . import srs
    from .storage import store_message

    message = rcpt.message
    if not message.sender or message.source in (QueuedMessage.Source.DSN, QueuedMessage.Source.AUTOREPLY):
        return False
    # Forwarded mail carries an SRS sender: the bounce goes to the original sender it encodes.
    to = srs.reverse(message.sender) or message.sender
    data = build(message, [rcpt], action, to)
    resolution = resolve(to)
    if resolution.ok:
        store_message("", resolution.mailboxes, resolution.remote, data, source=QueuedMessage.Source.DSN)
    elif resolution.verdict is Verdict.NOT_HOSTED:
        store_message("", [], [to], data, source=QueuedMessage.Source.DSN)
    else:
        log.warning("DSN for %s dropped: sender <%s> %s", message.queue_id, to, resolution.reason)
        return False
    log.info("DSN (%s) for %s in %s sent to <%s>", action, rcpt.address, message.queue_id, message.sender)
    return True
