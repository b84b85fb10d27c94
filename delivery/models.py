"""The outbound queue and the message log.

The queue is rows: a QueuedMessage holds the bytes exactly as they will be sent, and each
recipient has its own row with state, attempts and next attempt time. Celery only executes what
these rows describe, so a lost broker message delays mail but never loses it.
"""

from __future__ import annotations

import secrets

from django.db import models
from django.utils import timezone

from domains.models import Domain


def new_queue_id() -> str:
    return secrets.token_hex(8).upper()


class QueuedMessage(models.Model):
    class Source(models.TextChoices):
        SUBMISSION = "submission"
        INBOUND = "inbound"       # forwarded from an alias or a mailbox's forwarding
        WEBMAIL = "webmail"
        DSN = "dsn"
        AUTOREPLY = "autoreply"

    queue_id = models.CharField(max_length=32, default=new_queue_id)
    sender = models.CharField(max_length=254, blank=True, help_text="envelope sender; empty: <>")
    data = models.BinaryField()
    size = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SUBMISSION)
    auth_user = models.CharField(max_length=254, blank=True)
    sender_domain = models.ForeignKey(
        Domain, null=True, blank=True, on_delete=models.SET_NULL, related_name="queued_messages"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A constraint rather than unique=True: on PostgreSQL Django adds to a unique CharField
            # a second index for LIKE 'prefix%' (varchar_pattern_ops), which no query here uses
            # and every queued message paid for.
            models.UniqueConstraint(fields=["queue_id"], name="queue_id_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_id} from <{self.sender}>"


class QueuedRecipient(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        IN_FLIGHT = "in_flight"
        DEFERRED = "deferred"
        DELIVERED = "delivered"
        BOUNCED = "bounced"
        EXPIRED = "expired"

    PENDING_STATES = (State.QUEUED, State.IN_FLIGHT, State.DEFERRED)

    message = models.ForeignKey(QueuedMessage, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=254)
    original_address = models.CharField(max_length=254, blank=True)
    domain = models.CharField(max_length=253, help_text="recipient's domain, A-label")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_reply = models.TextField(blank=True)
    tls_version = models.CharField(max_length=32, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delay_warned = models.BooleanField(default=False)
    dsn_sent = models.BooleanField(default=False)

    class Meta:
        ordering = ["next_attempt_at"]
        indexes = [
            # The claim query: due rows in a pending state, oldest due first.
            models.Index(fields=["state", "next_attempt_at"], name="queue_due_idx"),
            models.Index(fields=["domain", "state"], name="queue_dest_idx"),
            # take_over and the lease checks look rows up by owner token; without it each batch
            # scanned every row ever queued, delivered ones included.
            models.Index(fields=["lease_owner"], name="queue_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.state})"


class MessageLog(models.Model):
    """One row per accepted or refused message per hosted domain involved, for the portal."""

    class Direction(models.TextChoices):
        INBOUND = "inbound"
        SUBMISSION = "submission"
        OUTBOUND = "outbound"

    class Result(models.TextChoices):
        ACCEPTED = "accepted"
        REFUSED = "refused"
        DELIVERED = "delivered"
        DEFERRED = "deferred"
        BOUNCED = "bounced"
        EXPIRED = "expired"

    created_at = models.DateTimeField(default=timezone.now)
    # No index of its own: log_domain_recent_idx starts with domain and serves every lookup by
    # it (the portal's page, a domain's deletion). A second one cost every logged message about
    # two more pages written to SQLite's log.
    domain = models.ForeignKey(
        Domain, null=True, blank=True, on_delete=models.CASCADE, related_name="message_logs", db_index=False
    )
    direction = models.CharField(max_length=16, choices=Direction.choices)
    result = models.CharField(max_length=16, choices=Result.choices)
    queue_id = models.CharField(max_length=32, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    helo = models.CharField(max_length=255, blank=True)
    tls = models.CharField(max_length=64, blank=True)
    auth_user = models.CharField(max_length=254, blank=True)
    mail_from = models.CharField(max_length=254, blank=True)
    recipients = models.TextField(blank=True, help_text="comma separated")
    subject = models.CharField(max_length=255, blank=True)
    size = models.PositiveIntegerField(default=0)
    reply = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The portal's per-domain log page, newest first.
            models.Index(fields=["domain", "-created_at"], name="log_domain_recent_idx"),
            models.Index(fields=["-created_at"], name="log_recent_idx"),
            # `matching`'s exact queue id. Declared here, not with db_index=True, which on
            # PostgreSQL adds a LIKE-prefix index as well that every logged message paid for.
            models.Index(fields=["queue_id"], name="log_queue_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.direction} {self.result} {self.mail_from}"

    @staticmethod
    def matching(text: str) -> models.Q:
        """The portal's log search: a queue id exactly (indexed), else sender, recipients or subject."""
        text = text.strip()
        if len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text):
            return models.Q(queue_id=text.upper())
        return (models.Q(mail_from__icontains=text) | models.Q(recipients__icontains=text)
                | models.Q(subject__icontains=text))

    @staticmethod
    def involving(address: str) -> models.Q:
        """Rows where `address` sent, logged in or is one of the recipients.

        `recipients` is a comma-separated list, so the address must match a whole item: bob@ must
        never see the mail of xbob@ (a mailbox user's own log depends on it).
        """
        q = models.Q(mail_from__iexact=address) | models.Q(auth_user__iexact=address)
        q |= models.Q(recipients__iexact=address)
        for sep in (",", ", "):
            q |= models.Q(recipients__istartswith=address + sep) | models.Q(recipients__iendswith=sep + address)
            q |= models.Q(recipients__icontains=sep + address + sep)
        return q

class Suppression(models.Model):
    """A recipient that hard-bounced for a sending domain: not tried again until `expires_at`.

    Sending to an address that answered 5xx again and again hurts the domain's reputation
    (Postal keeps suppressions for 30 days); the portal, the API and the admin show and remove them.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="suppressions")
    address = models.CharField(max_length=254)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "address"], name="suppression_unique")
        ]

    def __str__(self) -> str:
        return f"{self.address} suppressed for {self.domain.name} until {self.expires_at:%Y-%m-%d}"

    @classmethod
    def active_for(cls, domain: Domain | None, address: str) -> Suppression | None:
        if domain is None:
            return None
        return cls.objects.filter(domain=domain, address=address.lower(),
                                  expires_at__gt=timezone.now()).first()


class AutoReplySent(models.Model):
    """When a mailbox last auto-replied to a sender: RFC 3834 asks for at most one per period."""

    mailbox = models.ForeignKey("mailboxes.Mailbox", on_delete=models.CASCADE, related_name="autoreplies_sent")
    sender = models.CharField(max_length=254)
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "sender"], name="autoreply_once_per_sender")
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id} replied to {self.sender} at {self.sent_at:%Y-%m-%d %H:%M}"


class MtaStsPolicy(models.Model):
    """A domain's cached MTA-STS policy (RFC 8461 section 5): shared by every worker."""

    domain = models.CharField(max_length=253, unique=True)
    policy_id = models.CharField(max_length=64)
    mode = models.CharField(max_length=16)
    mx = models.JSONField(default=list)
    max_age = models.PositiveIntegerField()
    fetched_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.domain} {self.mode} (id {self.policy_id})"


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class Webhook(models.Model):
    """An HTTPS endpoint told of a domain's outbound delivery outcomes (as Postal's webhooks).

    Events are rows (WebhookEvent) written in the transaction that records the outcome, then
    POSTed by the worker and retried until the endpoint takes them: at least once, in the order
    they happened for each recipient; the event id in every request lets a receiver drop repeats.
    """

    class Event(models.TextChoices):
        DELIVERED = "delivered"
        DEFERRED = "deferred"
        BOUNCED = "bounced"
        EXPIRED = "expired"

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="which outcomes are sent: Event values")
    # Kept readable: each request carries an HMAC-SHA256 made with it, which the receiver checks.
    secret = models.CharField(max_length=64, default=new_webhook_secret)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_status = models.CharField(max_length=300, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.url} for {self.domain.name}"


class WebhookEvent(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"     # still refused when WEBHOOK_LIFETIME ran out

    # No database constraint: events are written in the transaction that records a delivery, from
    # a few seconds' memory of which webhooks exist; a webhook deleted meanwhile must not make
    # that transaction fail. Such an event is dropped when it comes up (webhooks.send_due).
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="queued_events",
                                db_constraint=False)
    payload = models.JSONField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_due_idx")]

    def __str__(self) -> str:
        return f"{self.payload.get('event')} for {self.webhook_id} ({self.state})"
