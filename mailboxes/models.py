"""Accounts and what mail they may receive and send: users, mailboxes, aliases, credentials."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from domains.models import Domain
from mailhost.addresses import AddressError, normalize_address, normalize_local_part, parse_address

from . import passwords


class User(AbstractUser):
    """A login: a superadmin, a domain admin, or the owner of a mailbox (username = address).

    Roles are derived, not stored twice: `is_superuser` is a superadmin, `administered_domains`
    makes a domain admin, a `mailbox` makes a mailbox user; one account may be several.
    """

    @property
    def is_domain_admin(self) -> bool:
        return self.is_superuser or self.administered_domains.exists()

    @property
    def role(self) -> str:
        if self.is_superuser:
            return "superadmin"
        if self.administered_domains.exists():
            return "domain admin"
        return "mailbox user"


class Mailbox(models.Model):
    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="mailbox")
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="mailboxes")
    local_part = models.CharField(max_length=64, help_text="lower case")
    display_name = models.CharField(max_length=200, blank=True)
    quota = models.PositiveBigIntegerField(default=0, help_text="bytes; 0: no quota")
    used_bytes = models.PositiveBigIntegerField(default=0)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Recipients an hour over the mailbox's password and its app passwords (delivery/rate_limits.py).
    send_limit_per_hour = models.PositiveIntegerField(
        null=True, blank=True, help_text="recipients an hour, over its password and app passwords; empty: no limit")
    # Forwarding chosen by the mailbox user; remote targets are SRS-rewritten on the way out.
    forward_to = models.JSONField(default=list, blank=True)
    forward_keep_copy = models.BooleanField(default=True)
    # Auto-reply (RFC 3834): at most once per sender per `autoreply_interval_days`.
    autoreply_enabled = models.BooleanField(default=False)
    autoreply_subject = models.CharField(max_length=200, blank=True)
    autoreply_body = models.TextField(blank=True)
    autoreply_start = models.DateTimeField(null=True, blank=True)
    autoreply_end = models.DateTimeField(null=True, blank=True)
    autoreply_interval_days = models.PositiveSmallIntegerField(default=7)

    class Meta:
        ordering = ["domain__name", "local_part"]
        verbose_name_plural = "mailboxes"
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="mailbox_address_unique")
        ]

    def __str__(self) -> str:
        return self.address

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain.name}"

    @property
    def maildir(self) -> Path:
        return Path(settings.MAIL_ROOT) / self.domain.name / self.local_part

    @property
    def can_receive(self) -> bool:
        return self.active and self.domain.active and self.user.is_active

    def clean(self) -> None:
        try:
            self.local_part = normalize_local_part(self.local_part, allow_subaddress=False)
        except AddressError as exc:
            raise ValidationError({"local_part": str(exc)}) from exc
        if Alias.objects.filter(domain_id=self.domain_id, local_part=self.local_part).exists():
            raise ValidationError({"local_part": f"{self.local_part} is already an alias"})
        if self.domain.max_quota and (self.quota == 0 or self.quota > self.domain.max_quota):
            raise ValidationError({"quota": "quota exceeds the domain's maximum"})
        limit = self.domain.max_mailboxes
        if self._state.adding and limit and self.domain.mailboxes.count() >= limit:
            raise ValidationError(f"{self.domain.name} already has its maximum of {limit} mailboxes")

    def is_over_quota(self, extra: int = 0) -> bool:
        return bool(self.quota) and self.used_bytes + extra > self.quota

    def send_as_addresses(self) -> set[str]:
        """Addresses this mailbox may use as sender: its own and aliases that deliver to it."""
        own = self.address
        allowed = {own}
        aliases = Alias.objects.filter(active=True, domain__active=True).exclude(local_part="")
        for alias in aliases.filter(destinations__icontains=own).select_related("domain"):
            if own in alias.destinations:
                allowed.add(alias.address)
        return allowed

    def can_send_as(self, address: str) -> bool:
        try:
            address = normalize_address(address)
        except AddressError:
            return False
        return address in self.send_as_addresses()


class Alias(models.Model):
    """`local_part@domain` -> destinations; an empty local part is the domain's catch-all."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="aliases")
    local_part = models.CharField(max_length=64, blank=True, help_text="empty: catch-all")
    destinations = models.JSONField(default=list, help_text="normalised addresses")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["domain__name", "local_part"]
        verbose_name_plural = "aliases"
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="alias_address_unique")
        ]

    def __str__(self) -> str:
        return f"{self.address} -> {', '.join(self.destinations)}"

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain.name}"

    @property
    def is_catch_all(self) -> bool:
        return self.local_part == ""

    def clean(self) -> None:
        errors = {}
        if self.local_part:
            try:
                self.local_part = normalize_local_part(self.local_part)
            except AddressError as exc:
                errors["local_part"] = str(exc)
        if not self.destinations:
            errors["destinations"] = "an alias needs at least one destination"
        else:
            try:
                self.destinations = list(dict.fromkeys(normalize_address(d) for d in self.destinations))
            except AddressError as exc:
                errors["destinations"] = str(exc)
        if errors:
            raise ValidationError(errors)
        if self.local_part and Mailbox.objects.filter(
            domain_id=self.domain_id, local_part=self.local_part
        ).exists():
            raise ValidationError({"local_part": f"{self.address} is already a mailbox"})
        limit = self.domain.max_aliases
        if self._state.adding and limit and self.domain.aliases.count() >= limit:
            raise ValidationError(f"{self.domain.name} already has its maximum of {limit} aliases")


class RelayCredential(models.Model):
    """An app password (of a mailbox) or an SMTP relay credential (of a domain).

    The secret is shown once at creation and kept only as a hash. A mailbox's credential logs in
    with the mailbox address; a domain credential with its own generated `login`.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="relay_credentials")
    mailbox = models.ForeignKey(
        Mailbox, on_delete=models.CASCADE, null=True, blank=True, related_name="app_passwords"
    )
    label = models.CharField(max_length=100)
    login = models.CharField(max_length=254, unique=True, null=True, blank=True)
    secret_hash = models.CharField(max_length=200, editable=False)
    allowed_senders = models.JSONField(
        default=list, blank=True, help_text="addresses, or whole domains written as @domain"
    )
    rate_limit_per_hour = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["domain__name", "label"]

    def __str__(self) -> str:
        owner = self.mailbox.address if self.mailbox_id else self.login
        return f"{self.label} ({owner})"

    @classmethod
    def issue(cls, *, domain: Domain, label: str, mailbox: Mailbox | None = None,
              allowed_senders: list[str] | None = None, **fields) -> tuple[RelayCredential, str]:
        """Create a credential and return it with its one-time plaintext secret."""
        secret = passwords.make_secret()
        login = None if mailbox else f"relay-{secrets.token_hex(4)}@{domain.name}"
        cred = cls(domain=domain, mailbox=mailbox, label=label, login=login,
                   secret_hash=passwords.hash_secret(secret),
                   allowed_senders=allowed_senders or [], **fields)
        cred.full_clean()
        cred.save()
        return cred, secret

    @property
    def is_active(self) -> bool:
        if self.revoked_at or not self.domain.active:
            return False
        return not self.mailbox_id or self.mailbox.can_receive

    def check_secret(self, secret: str) -> bool:
        return self.is_active and passwords.check_secret(secret, self.secret_hash)

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])

    def clean(self) -> None:
        if self.mailbox_id and self.mailbox.domain_id != self.domain_id:
            raise ValidationError("an app password belongs to its mailbox's domain")
        cleaned = []
        for entry in self.allowed_senders:
            try:
                if entry.startswith("@"):
                    cleaned.append("@" + parse_address("x" + entry).domain)
                else:
                    cleaned.append(normalize_address(entry))
            except AddressError as exc:
                raise ValidationError({"allowed_senders": f"{entry!r}: {exc}"}) from exc
        self.allowed_senders = cleaned

    def can_send_as(self, address: str) -> bool:
        """A mailbox's app password sends as the mailbox; a domain credential as it lists."""
        try:
            addr = parse_address(address)
        except AddressError:
            return False
        if self.mailbox_id:
            return self.mailbox.can_send_as(str(addr))
        return str(addr) in self.allowed_senders or f"@{addr.domain}" in self.allowed_senders
