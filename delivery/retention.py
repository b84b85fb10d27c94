"""How long finished mail, the message log and lapsed suppressions are kept.

A queued message whose every recipient is final (delivered, bounced or expired) is only history:
its bounces and delay warnings were made when the outcome was recorded, nothing puts a final
recipient back in the queue (`queue retry` takes pending ones only), and its outcome is in the
message log. Left in place, every message's bytes stayed in the database for good: the queue
tables and their indexes grew with all mail ever sent, and so did every claim's index walks and
the database file that backups copy. Postfix removes a queue file once its last recipient is
done; here a finished message stays QUEUE_KEEP_FINISHED (default a day) so that `manage.py queue
list` and the admin still show what just happened, then goes. The portal's message log keeps
MESSAGE_LOG_DAYS (default 90), the retention a domain admin expects to search back through.

Deletes go in chunks, each its own short transaction: on SQLite every process's writers queue
behind one lock, and one long DELETE would hold up submission for its whole length.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .models import MessageLog, QueuedMessage, QueuedRecipient, Suppression, WebhookEvent

CHUNK = 500


def purge(now: dt.datetime | None = None) -> dict[str, int]:
    """Everything below, once; how many rows of each kind went."""
    now = now or timezone.now()
    return {
        "messages": purge_finished_messages(now),
        "log_rows": purge_message_log(now),
        "suppressions": purge_lapsed_suppressions(now),
        "webhook_events": purge_finished_webhook_events(now),
    }


def purge_finished_messages(now: dt.datetime) -> int:
    """Delete messages finished for every recipient more than QUEUE_KEEP_FINISHED seconds ago.

    A recipient's finishing time is its delivery time, or for a bounce or an expiry the time of
    the attempt it was due at (the outcome does not move it): at most one retry interval early.
    """
    cutoff = now - dt.timedelta(seconds=settings.QUEUE_KEEP_FINISHED)
    # Final states are final (`queue retry` takes pending recipients only, nothing adds a
    # recipient to a stored message), so what a chunk's read finds finished stays finished.
    return _delete_in_chunks(QueuedMessage, _finished_before(cutoff))


def _finished_before(cutoff: dt.datetime):
    """Messages older than `cutoff` with no recipient pending or finished since `cutoff`."""
    recent_or_pending = QueuedRecipient.objects.filter(message=OuterRef("pk")).filter(
        Q(state__in=QueuedRecipient.PENDING_STATES)
        | Q(delivered_at__gte=cutoff)
        | Q(delivered_at__isnull=True, next_attempt_at__gte=cutoff))
    return QueuedMessage.objects.filter(created_at__lt=cutoff).exclude(Exists(recent_or_pending))


def purge_message_log(now: dt.datetime) -> int:
    """Delete message-log rows older than MESSAGE_LOG_DAYS (0 keeps them for good)."""
    days = settings.MESSAGE_LOG_DAYS
    if days <= 0:
        return 0
    return _delete_in_chunks(MessageLog, MessageLog.objects.filter(created_at__lt=now - dt.timedelta(days=days)))


def _delete_in_chunks(model, candidates) -> int:
    """Delete `candidates` (rows of `model`, their dependants cascading) CHUNK at a time, each
    chunk read and deleted in one transaction; how many rows of `model` went."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(candidates.order_by().values_list("pk", flat=True)[:CHUNK])
            if not ids:
                return deleted
            deleted += model.objects.filter(pk__in=ids).delete()[1].get(model._meta.label, 0)


def purge_lapsed_suppressions(now: dt.datetime) -> int:
    """Suppressions past their expiry no longer hold anything back (delivery skips them)."""
    return Suppression.objects.filter(expires_at__lte=now).delete()[0]


def purge_finished_webhook_events(now: dt.datetime) -> int:
    """Webhook events sent or given up on stay QUEUE_KEEP_FINISHED, like finished mail."""
    cutoff = now - dt.timedelta(seconds=settings.QUEUE_KEEP_FINISHED)
    return _delete_in_chunks(WebhookEvent, WebhookEvent.objects.filter(
        state__in=[WebhookEvent.State.SENT, WebhookEvent.State.FAILED], created_at__lt=cutoff))
