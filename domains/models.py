"""Hosted domains, their alias domains and DKIM keys."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from mailhost.addresses import AddressError, display_domain, normalize_domain

from .access import DomainQuerySet

GIB = 1024**3


def _ownership_token() -> str:
    return secrets.token_hex(16)


class Domain(models.Model):
    """A domain whose mail this server hosts, stored as its A-label."""

    name = models.CharField(max_length=253, unique=True, help_text="A-label, lower case")
    active = models.BooleanField(default=True)
    max_mailboxes = models.PositiveIntegerField(default=0, help_text="0 means no limit")
    max_aliases = models.PositiveIntegerField(default=0, help_text="0 means no limit")
    default_quota = models.PositiveBigIntegerField(default=GIB, help_text="bytes; 0: no quota")
    max_quota = models.PositiveBigIntegerField(default=0, help_text="bytes; 0: no limit")
    # Over every authenticated sender of the domain together (mailboxes, app passwords, relay
    # credentials): the platform's cap on one tenant, so a compromised account cannot burn the
    # shared IP's reputation at full speed (delivery/rate_limits.py).
    send_limit_per_hour = models.PositiveIntegerField(
        default=0, help_text="recipients an hour over all the domain's senders; 0 means no limit")
    admins = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="administered_domains"
    )
    ownership_token = models.CharField(max_length=64, default=_ownership_token, editable=False)
    ownership_verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def unicode_name(self) -> str:
        return display_domain(self.name)

    def clean(self) -> None:
        try:
            self.name = normalize_domain(self.name)
        except AddressError as exc:
            raise ValidationError({"name": str(exc)}) from exc
        if DomainAlias.objects.filter(name=self.name).exists():
            raise ValidationError({"name": f"{self.name} is already an alias domain"})
        if self.max_quota and self.default_quota > self.max_quota:
            raise ValidationError({"default_quota": "default quota exceeds the maximum quota"})

    def active_dkim_key(self) -> DkimKey | None:
        return self.dkim_keys.filter(state=DkimKey.State.ACTIVE).order_by("-activated_at").first()

    def quota_for(self, requested: int | None) -> int:
        """The quota a new mailbox gets: what was asked, capped by the domain's maximum."""
        quota = self.default_quota if requested is None else requested
        if self.max_quota and (quota == 0 or quota > self.max_quota):
            raise ValidationError(
                f"quota exceeds the domain's maximum of {self.max_quota} bytes"
            )
        return quota


class DomainAlias(models.Model):
    """Mail for `name` is handled as mail for `target` (user@alias.test -> user@target.test)."""

    name = models.CharField(max_length=253, unique=True)
    target = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="alias_domains")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "domain aliases"

    def __str__(self) -> str:
        return f"{self.name} -> {self.target.name}"

    def clean(self) -> None:
        try:
            self.name = normalize_domain(self.name)
        except AddressError as exc:
            raise ValidationError({"name": str(exc)}) from exc
        if Domain.objects.filter(name=self.name).exists():
            raise ValidationError({"name": f"{self.name} is already a hosted domain"})


class DkimKey(models.Model):
    """A DKIM key pair. Pending keys are published before they sign; retired keys stop."""

    class Algorithm(models.TextChoices):
        RSA2048 = "rsa-2048", "RSA 2048"
        ED25519 = "ed25519", "Ed25519"

    class State(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        RETIRED = "retired"

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices, default=Algorithm.RSA2048)
    private_key = models.TextField(help_text="PEM, PKCS#8")
    public_key = models.TextField(help_text="base64 value of the p= tag")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["domain", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="dkim_selector_unique")
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name} ({self.algorithm}, {self.state})"

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"

    @property
    def txt_value(self) -> str:
        k = "ed25519" if self.algorithm == self.Algorithm.ED25519 else "rsa"
        return f"v=DKIM1; k={k}; p={self.public_key}"

    def activate(self) -> None:
        self.state = self.State.ACTIVE
        self.activated_at = timezone.now()
        self.save(update_fields=["state", "activated_at"])

    def retire(self) -> None:
        self.state = self.State.RETIRED
        self.retired_at = timezone.now()
        self.save(update_fields=["state", "retired_at"])


class DnsCheck(models.Model):
    """The latest verdict of one live DNS check for a domain, and whether it changed last run.

    One row per (domain, check), updated in place: the wizard shows the current state and what
    changed, and the periodic re-check of every domain does not grow a history table.
    """

    class Status(models.TextChoices):
        OK = "ok"
        WARNING = "warning"
        ERROR = "error"
        PENDING = "pending"

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dns_checks")
    key = models.CharField(max_length=80, help_text="the check: mx, spf, dkim:<selector>, dmarc, …")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    required = models.BooleanField(default=False)
    found = models.TextField(blank=True)
    expected = models.TextField(blank=True)
    hint = models.TextField(blank=True)
    checked_at = models.DateTimeField(default=timezone.now)
    changed = models.BooleanField(default=False, help_text="status or found value differs from the previous run")
    previous_status = models.CharField(max_length=16, blank=True)
    previous_found = models.TextField(blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["domain", "id"]
        constraints = [models.UniqueConstraint(fields=["domain", "key"], name="dns_check_unique")]

    def __str__(self) -> str:
        return f"{self.domain.name} {self.key}: {self.status}"
