from celery import shared_task

from mailboxes import usage


@shared_task
def recount_mailbox_usage() -> int:
    """Periodic: keep Mailbox.used_bytes true when mail is deleted over IMAP/POP3."""
    return usage.recount_all()
