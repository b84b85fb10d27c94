"""What the portal itself remembers: the audit trail of admin actions and failed logins."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from domains.models import Domain


class AuditLog(models.Model):
    """One admin action. Names are copied so the row still reads right after deletions."""

    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_name = models.CharField(max_length=254)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    domain = models.ForeignKey(Domain, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    domain_name = models.CharField(max_length=253, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The audit page: newest first, globally and per domain.
            models.Index(fields=["-created_at"], name="audit_recent_idx"),
            models.Index(fields=["domain", "-created_at"], name="audit_domain_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.object_repr}"


class LoginFailure(models.Model):
    """A failed portal login; rows in the window decide whether an account or network is throttled.

    The password is kept only as a keyed digest so that one client retrying the same stale
    password (a phone with an old one) counts once, while guessing distinct passwords counts each.
    """

    created_at = models.DateTimeField(default=timezone.now)
    username = models.CharField(max_length=254)
    network = models.CharField(max_length=64)
    password_digest = models.CharField(max_length=32)

    class Meta:
        indexes = [
            models.Index(fields=["username", "created_at"], name="loginfail_user_idx"),
            models.Index(fields=["network", "created_at"], name="loginfail_net_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.username} from {self.network}"
