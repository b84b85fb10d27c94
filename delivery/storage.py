"""Accepting a message for its recipients: Maildir copies for local mailboxes, queue rows for
remote destinations. Every path that accepts mail (SMTP inbound and submission, webmail, DSNs)
comes through `store_message`, so "durable before 250" holds in one place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mailboxes.models import Mailbox

from . import autoreply, db_writes, maildir, signing
from .models import QueuedMessage
from .queue import enqueue

log = logging.getLogger(__name__)
# Mail written here (not relayed) gets Date/Message-ID if missing, on every copy alike.
PREPARED_SOURCES = (QueuedMessage.Source.SUBMISSION, QueuedMessage.Source.WEBMAIL)
# Mail a person sent: inbound from outside, and colleagues writing through submission or webmail.
AUTOREPLY_SOURCES = (QueuedMessage.Source.INBOUND, QueuedMessage.Source.SUBMISSION,
                     QueuedMessage.Source.WEBMAIL)


class OverQuota(Exception):
    """A mailbox cannot take the message; callers answer 452 4.2.2 (RFC 3463)."""

    def __init__(self, mailbox: Mailbox):
        super().__init__(f"{mailbox.address} is over its quota")
        self.mailbox = mailbox


@dataclass
class Stored:
    local_paths: dict[str, str] = field(default_factory=dict)   # mailbox address -> file
    queued: QueuedMessage | None = None


def deliver_local(mailbox: Mailbox, data: bytes) -> str:
    """Write one copy to the mailbox's Maildir (fsynced) and count it against the quota."""
    if mailbox.is_over_quota(len(data)):
        raise OverQuota(mailbox)
    path = maildir.deliver(mailbox.maildir, data)
    db_writes.add_used_bytes(mailbox.pk, len(data))
    mailbox.used_bytes += len(data)    # the SMTP service may reuse this object for a few seconds
    return str(path)


def store_message(sender: str, mailboxes: list[Mailbox], remote: list[str], data: bytes, *,
                  source: str = QueuedMessage.Source.SUBMISSION, auth_user: str = "") -> Stored:
    """Make the message durable for every recipient; return where each copy went.

    Returns only when each local copy is fsynced in new/ and the queue row for remote recipients
    is committed: the caller may then answer 250.
    """
    stored = Stored()
    if source in PREPARED_SOURCES:
        data = signing.prepare(data)
    for mailbox in dict.fromkeys(mailboxes):
        stored.local_paths[mailbox.address] = deliver_local(mailbox, data)
    if remote:
        stored.queued = enqueue(sender, list(remote), data, source=source, auth_user=auth_user,
                                prepared=source in PREPARED_SOURCES)
    if source in AUTOREPLY_SOURCES:
        _autoreplies(sender, mailboxes, data)
    return stored


def _autoreplies(sender: str, mailboxes: list[Mailbox], data: bytes) -> None:
    """Vacation replies come after the message is safe, and a failure here never refuses it."""
    for mailbox in dict.fromkeys(mailboxes):
        if not autoreply.is_active(mailbox):
            continue
        try:
            autoreply.maybe_reply(mailbox, sender, data)
        except Exception:
            log.exception("auto-reply of %s to <%s> failed", mailbox.address, sender)
