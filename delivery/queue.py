"""Putting mail on the outbound queue: committed to the database before anyone says 250."""

from __future__ import annotations

from django.db import transaction

from domains.models import Domain
from mailhost.addresses import parse_address

from .models import QueuedMessage, QueuedRecipient


def enqueue(sender: str, recipients: list[str], data: bytes, *,
            source: str = QueuedMessage.Source.SUBMISSION, auth_user: str = "",
            original_recipients: dict[str, str] | None = None) -> QueuedMessage:
    """Store one message and a row per recipient in one transaction.

    `data` is stored exactly as it will be sent (signing, if any, has already happened or
    happens at delivery time from these bytes).
    """
    original_recipients = original_recipients or {}
    sender_domain = None
    if sender:
        sender_domain = Domain.objects.filter(name=parse_address(sender).domain).first()
    with transaction.atomic():
        message = QueuedMessage.objects.create(
            sender=sender, data=data, size=len(data), source=source, auth_user=auth_user,
            sender_domain=sender_domain,
        )
        QueuedRecipient.objects.bulk_create(
            QueuedRecipient(message=message, address=rcpt, domain=parse_address(rcpt).domain,
                            original_address=original_recipients.get(rcpt, ""))
            for rcpt in dict.fromkeys(recipients)
        )
    return message
