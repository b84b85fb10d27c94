"""Keeping Mailbox.used_bytes true: the Maildir tree is the source of truth for usage.

Delivery adds each message's size as it stores it; deletions happen elsewhere too (IMAP and
POP3 through Dovecot, webmail). So the count is recomputed from the Maildir: whenever webmail
shows or changes a mailbox, and periodically for every mailbox (Celery beat). Dovecot enforces
its own quota from its index with the same limit (Mailbox.quota via userdb_quota_rule).
"""

from __future__ import annotations

from delivery.maildir import maildir_size

from .models import Mailbox


def recount(mailbox: Mailbox) -> int:
    """Set `used_bytes` from the bytes of mail in every folder of the mailbox; return it."""
    size = maildir_size(mailbox.maildir) if mailbox.maildir.exists() else 0
    if size != mailbox.used_bytes:
        Mailbox.objects.filter(pk=mailbox.pk).update(used_bytes=size)
        mailbox.used_bytes = size
    return size


def recount_all() -> int:
    """Recount every mailbox; returns how many were looked at."""
    count = 0
    for mailbox in Mailbox.objects.select_related("domain").iterator():
        recount(mailbox)
        count += 1
    return count
