"""Adding a hosted domain: one transaction, so a failure leaves nothing half-made."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from mailhost.addresses import AddressError, normalize_domain

from .dkim import create_key
from .models import Domain


def create_domain(name: str, **fields) -> Domain:
    """Store the domain as its A-label with an active RSA DKIM key ready to publish.

    The first key signs at once: a new domain has no old key to overlap with, and its DKIM record
    is among the records the owner publishes before any mail goes out.
    """
    try:
        a_label = normalize_domain(name)
    except AddressError as exc:
        raise ValidationError(str(exc)) from exc
    if Domain.objects.filter(name=a_label).exists():
        raise ValidationError(f"{a_label} is already hosted")
    with transaction.atomic():
        domain = Domain(name=a_label, **fields)
        domain.full_clean()
        domain.save()
        create_key(domain, active=True)
    return domain


def delete_domain(domain: Domain) -> None:
    """Remove a domain with its mailboxes' accounts, aliases and keys, in one transaction.

    Mailboxes protect their domain from accidental deletion, so their accounts go first. Mail
    already stored under MAIL_ROOT is left on disk for the operator to archive.
    """
    from mailboxes.models import User

    with transaction.atomic():
        User.objects.filter(mailbox__domain=domain).delete()
        domain.delete()
