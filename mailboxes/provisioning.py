"""Creating mailboxes and aliases: shared by the commands, the portal, CSV import and the API.

Each function validates everything first and writes in one transaction, so bad input leaves
nothing behind.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from domains.models import Domain, DomainAlias
from mailhost.addresses import AddressError, parse_address

from .models import Alias, Mailbox, User


def hosted_domain(name: str) -> Domain:
    """The Domain for an A-label, refusing alias domains and unknown names with a clear message."""
    domain = Domain.objects.filter(name=name).first()
    if domain is not None:
        return domain
    if DomainAlias.objects.filter(name=name).exists():
        raise ValidationError(f"{name} is an alias domain; create the address in its target domain")
    raise ValidationError(f"{name} is not a hosted domain; add it first with createdomain")


def create_mailbox(address: str, password: str, *, quota: int | None = None,
                   display_name: str = "") -> Mailbox:
    try:
        addr = parse_address(address, allow_subaddress=False)
    except AddressError as exc:
        raise ValidationError(str(exc)) from exc
    domain = hosted_domain(addr.domain)
    if User.objects.filter(username=str(addr)).exists():
        raise ValidationError(f"{addr} already exists")
    if len(password or "") < settings.MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"password must be at least {settings.MIN_PASSWORD_LENGTH} characters long"
        )
    user = User(username=str(addr), email=str(addr))
    validate_password(password, user)
    with transaction.atomic():
        user.set_password(password)
        user.save()
        mailbox = Mailbox(user=user, domain=domain, local_part=addr.local,
                          display_name=display_name, quota=domain.quota_for(quota))
        mailbox.full_clean()
        mailbox.save()
    return mailbox


def create_alias(address: str, destinations: list[str]) -> Alias:
    """`address` may be `@domain` for a catch-all; destinations may be local or remote."""
    try:
        if address.startswith("@"):
            addr = parse_address("catchall" + address)
            local = ""
        else:
            addr = parse_address(address)
            local = addr.local
    except AddressError as exc:
        raise ValidationError(str(exc)) from exc
    domain = hosted_domain(addr.domain)
    if Alias.objects.filter(domain=domain, local_part=local).exists():
        raise ValidationError(f"{address} is already an alias")
    alias = Alias(domain=domain, local_part=local, destinations=list(destinations))
    with transaction.atomic():
        alias.full_clean()
        alias.save()
    return alias


def delete_mailbox(mailbox: Mailbox) -> None:
    """Remove a mailbox and its login; an account that also administers domains keeps its login.

    The Maildir stays on disk: deleting stored mail is the operator's decision, not a click's.
    """
    with transaction.atomic():
        user = mailbox.user
        if user.is_superuser or user.administered_domains.exists():
            mailbox.delete()
        else:
            user.delete()
