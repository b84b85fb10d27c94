"""Finished mail leaves the queue after QUEUE_KEEP_FINISHED, the message log keeps
MESSAGE_LOG_DAYS, lapsed suppressions go; pending mail is never touched (delivery/retention.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from delivery import retention, tasks
from delivery.models import MessageLog, QueuedMessage, QueuedRecipient, Suppression
from delivery.queue import enqueue

MESSAGE = b"From: bob@example.org\r\nTo: x@remote.test\r\nSubject: s\r\n\r\nbody\r\n"
State = QueuedRecipient.State


def ago(**kwargs) -> dt.datetime:
    return timezone.now() - dt.timedelta(**kwargs)


def queued(*recipients: str, created: dt.datetime) -> QueuedMessage:
    message = enqueue("bob@example.org", list(recipients), MESSAGE)
    QueuedMessage.objects.filter(pk=message.pk).update(created_at=created)
    return message


def finish(message: QueuedMessage, address: str, state: str, at: dt.datetime) -> None:
    """A recipient's outcome as the worker records it: a delivery stamps delivered_at, a bounce
    or an expiry leaves next_attempt_at at the attempt it was due for."""
    rows = message.recipients.filter(address=address)
    if state == State.DELIVERED:
        rows.update(state=state, delivered_at=at, next_attempt_at=at - dt.timedelta(seconds=1))
    else:
        rows.update(state=state, next_attempt_at=at)


def test_a_message_delivered_to_everyone_more_than_a_day_ago_leaves_the_queue(bob):
    message = queued("x@remote.test", "y@remote.test", created=ago(days=2))
    finish(message, "x@remote.test", State.DELIVERED, ago(days=2))
    finish(message, "y@remote.test", State.DELIVERED, ago(hours=25))
    assert retention.purge()["messages"] == 1
    assert not QueuedMessage.objects.exists() and not QueuedRecipient.objects.exists()


def test_bounced_and_expired_recipients_are_finished_too(bob):
    message = queued("x@remote.test", "y@remote.test", created=ago(days=6))
    finish(message, "x@remote.test", State.BOUNCED, ago(days=5))
    finish(message, "y@remote.test", State.EXPIRED, ago(days=1, hours=1))
    assert retention.purge()["messages"] == 1
    assert not QueuedMessage.objects.exists()


@pytest.mark.parametrize("pending", [State.QUEUED, State.IN_FLIGHT, State.DEFERRED])
def test_a_message_with_a_recipient_still_pending_stays_however_old(bob, pending):
    message = queued("x@remote.test", "y@remote.test", created=ago(days=4))
    finish(message, "x@remote.test", State.DELIVERED, ago(days=4))
    message.recipients.filter(address="y@remote.test").update(state=pending, next_attempt_at=ago(days=3))
    assert retention.purge()["messages"] == 0
    assert message.recipients.count() == 2


def test_a_message_finished_within_the_keep_time_stays_for_queue_list(bob):
    message = queued("x@remote.test", "y@remote.test", created=ago(days=3))
    finish(message, "x@remote.test", State.DELIVERED, ago(days=3))
    finish(message, "y@remote.test", State.BOUNCED, ago(hours=2))
    fresh = queued("z@remote.test", created=ago(minutes=5))
    finish(fresh, "z@remote.test", State.DELIVERED, ago(minutes=4))
    assert retention.purge()["messages"] == 0
    assert QueuedMessage.objects.count() == 2


def test_the_keep_time_is_a_setting(bob, settings):
    settings.QUEUE_KEEP_FINISHED = 60
    message = queued("x@remote.test", created=ago(minutes=5))
    finish(message, "x@remote.test", State.DELIVERED, ago(minutes=2))
    assert retention.purge()["messages"] == 1


def test_the_log_rows_of_a_purged_message_stay_in_the_portal(bob):
    message = queued("x@remote.test", created=ago(days=2))
    finish(message, "x@remote.test", State.DELIVERED, ago(days=2))
    MessageLog.objects.create(domain=bob.domain, direction="outbound", result="delivered", queue_id=message.queue_id)
    retention.purge()
    assert MessageLog.objects.filter(queue_id=message.queue_id).exists()


def test_many_finished_messages_go_in_short_transactions(bob, monkeypatch):
    monkeypatch.setattr(retention, "CHUNK", 2)
    for _ in range(5):
        message = queued("x@remote.test", created=ago(days=2))
        finish(message, "x@remote.test", State.DELIVERED, ago(days=2))
    keep = queued("y@remote.test", created=ago(days=2))
    assert retention.purge()["messages"] == 5
    assert list(QueuedMessage.objects.values_list("pk", flat=True)) == [keep.pk]


def log_row(bob, created: dt.datetime) -> MessageLog:
    row = MessageLog.objects.create(domain=bob.domain, direction="submission", result="accepted")
    MessageLog.objects.filter(pk=row.pk).update(created_at=created)
    return row


def test_the_message_log_keeps_its_days_and_drops_older_rows(bob, monkeypatch):
    monkeypatch.setattr(retention, "CHUNK", 2)
    old = [log_row(bob, ago(days=91)) for _ in range(3)]
    recent = log_row(bob, ago(days=89))
    assert retention.purge()["log_rows"] == 3
    assert list(MessageLog.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not MessageLog.objects.filter(pk__in=[r.pk for r in old]).exists()


def test_message_log_days_of_zero_keeps_the_log_for_good(bob, settings):
    settings.MESSAGE_LOG_DAYS = 0
    log_row(bob, ago(days=4000))
    assert retention.purge()["log_rows"] == 0
    assert MessageLog.objects.count() == 1


def test_lapsed_suppressions_go_and_current_ones_stay(bob):
    lapsed = Suppression.objects.create(domain=bob.domain, address="gone@remote.test", reason="550",
                                        expires_at=ago(minutes=1))
    current = Suppression.objects.create(domain=bob.domain, address="still@remote.test", reason="550",
                                         expires_at=timezone.now() + dt.timedelta(days=3))
    assert retention.purge()["suppressions"] == 1
    assert list(Suppression.objects.all()) == [current]
    assert not Suppression.objects.filter(pk=lapsed.pk).exists()


def test_finished_webhook_events_go_after_the_keep_time_and_pending_ones_stay(bob):
    from delivery.models import Webhook, WebhookEvent

    hook = Webhook.objects.create(domain=bob.domain, url="https://hooks.example.net/x", events=["delivered"])
    old = {state: WebhookEvent.objects.create(webhook=hook, payload={}, state=state, created_at=ago(days=2))
           for state in ("sent", "failed", "pending")}
    recent = WebhookEvent.objects.create(webhook=hook, payload={}, state="sent")
    assert retention.purge()["webhook_events"] == 2
    assert set(WebhookEvent.objects.values_list("pk", flat=True)) == {old["pending"].pk, recent.pk}


def test_beat_runs_the_purge_every_hour_through_the_worker(bob):
    entry = settings.CELERY_BEAT_SCHEDULE["delivery-purge"]
    assert entry["task"] == tasks.purge.name == "delivery.purge" and entry["schedule"] == 3600
    message = queued("x@remote.test", created=ago(days=2))
    finish(message, "x@remote.test", State.DELIVERED, ago(days=2))
    assert tasks.purge.apply().get() == {"messages": 1, "log_rows": 0, "suppressions": 0, "webhook_events": 0}
    assert not QueuedMessage.objects.exists()
