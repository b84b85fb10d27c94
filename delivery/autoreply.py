"""Vacation auto-replies (RFC 3834).

A reply goes out only to a person who wrote personally: never to the null sender, never to
mailing lists or bulk mail (List-*, Precedence), never to other automatic mail (Auto-Submitted
other than `no`, mailer daemons), and at most once per sender per `autoreply_interval_days`.
Replies carry `Auto-Submitted: auto-replied` and the null envelope sender, so the other side's
auto-responder stays quiet and a bounce of the reply goes nowhere.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from email.header import decode_header, make_header
from email.message import EmailMessage

from django.db import IntegrityError, transaction
from django.utils import timezone

from mailboxes.models import Mailbox
from mailhost.addresses import AddressError, parse_address

from .models import AutoReplySent, QueuedMessage
from .signing import header_value

log = logging.getLogger(__name__)
AUTOMATIC_LOCAL_PARTS = ("mailer-daemon", "postmaster", "noreply", "no-reply", "listserv", "majordomo")


def is_active(mailbox: Mailbox, now: dt.datetime | None = None) -> bool:
    now = now or timezone.now()
    return (mailbox.autoreply_enabled
            and (mailbox.autoreply_start is None or mailbox.autoreply_start <= now)
            and (mailbox.autoreply_end is None or now < mailbox.autoreply_end))


def why_not(sender: str, data: bytes) -> str | None:
    """The reason this message must get no auto-reply, or None when one is allowed."""
    if not sender:
        return "null sender"
    try:
        local = parse_address(sender).local
    except AddressError:
        return "unparseable sender"
    if local in AUTOMATIC_LOCAL_PARTS or local.startswith("owner-") or local.endswith("-request"):
        return f"automatic sender {sender}"
    auto = header_value(data, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    if header_value(data, "Precedence").lower() in ("bulk", "list", "junk"):
        return "bulk or list mail (Precedence)"
    for name in ("List-Id", "List-Unsubscribe", "List-Post", "X-Auto-Response-Suppress"):
        if header_value(data, name):
            return f"list or bulk mail ({name})"
    return None


def _subject(data: bytes) -> str:
    raw = header_value(data, "Subject")
    try:
        return str(make_header(decode_header(raw)))
    except (UnicodeDecodeError, LookupError):
        return raw


def build(mailbox: Mailbox, sender: str, data: bytes) -> bytes:
    reply = EmailMessage()
    reply["From"] = mailbox.address
    reply["To"] = sender
    subject = mailbox.autoreply_subject or f"Auto: {_subject(data)}".strip()
    reply["Subject"] = subject
    reply["Date"] = email.utils.formatdate(usegmt=True)
    reply["Message-ID"] = email.utils.make_msgid(domain=mailbox.domain.name)
    original_id = header_value(data, "Message-ID")
    if original_id:
        reply["In-Reply-To"] = original_id
        reply["References"] = original_id
    reply["Auto-Submitted"] = "auto-replied"
    reply["Precedence"] = "bulk"
    reply.set_content(mailbox.autoreply_body or "I am away and will read your message when I return.")
    return reply.as_bytes()


def maybe_reply(mailbox: Mailbox, sender: str, data: bytes) -> bool:
    """Send the mailbox's auto-reply to `sender` if every rule allows it; True when one was sent."""
    from mailboxes.directory import Verdict, resolve

    from .storage import store_message

    if not is_active(mailbox):
        return False
    reason = why_not(sender, data)
    if reason is None and sender.lower() == mailbox.address.lower():
        reason = "mail from the mailbox itself"
    if reason:
        log.info("no auto-reply from %s: %s", mailbox.address, reason)
        return False
    sender = sender.lower()
    now = timezone.now()
    since = now - dt.timedelta(days=mailbox.autoreply_interval_days)
    with transaction.atomic():
        sent = AutoReplySent.objects.select_for_update().filter(mailbox=mailbox, sender=sender).first()
        if sent and sent.sent_at > since:
            return False
        try:
            with transaction.atomic():
                AutoReplySent.objects.update_or_create(mailbox=mailbox, sender=sender,
                                                       defaults={"sent_at": now})
        except IntegrityError:
            return False  # a concurrent delivery just replied
    data = build(mailbox, sender, data)
    resolution = resolve(sender)
    if resolution.ok:
        store_message("", resolution.mailboxes, resolution.remote, data, source=QueuedMessage.Source.AUTOREPLY)
    elif resolution.verdict is Verdict.NOT_HOSTED:
        store_message("", [], [sender], data, source=QueuedMessage.Source.AUTOREPLY)
    else:
        return False
    return True
