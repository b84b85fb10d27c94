"""`python manage.py queue [list | retry ID | delete ID]` (DESIGN.md contract)."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from delivery.models import QueuedMessage, QueuedRecipient
from delivery.queue import enqueue

MESSAGE = b"From: bob@example.org\r\nTo: x@remote.test\r\nSubject: s\r\n\r\nbody\r\n"


def run(*args: str) -> str:
    out = StringIO()
    call_command("queue", *args, stdout=out)
    return out.getvalue()


def test_list_shows_pending_recipients_with_state_attempts_and_last_reply(bob):
    message = enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    message.recipients.update(state="deferred", attempts=2, last_reply="451 4.7.1 Greylisted")
    out = run("list")
    assert message.queue_id in out and "x@remote.test" in out and "deferred" in out
    assert "attempts=2" in out and "451 4.7.1 Greylisted" in out


def test_list_says_so_when_the_queue_is_empty(db):
    assert "queue is empty" in run()


def test_delivered_recipients_are_listed_only_with_all(bob):
    message = enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    message.recipients.update(state="delivered")
    assert message.queue_id not in run("list")
    assert message.queue_id in run("list", "--all")


def test_retry_makes_a_deferred_message_due_now(bob):
    message = enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    message.recipients.update(state="deferred", next_attempt_at=timezone.now() + dt.timedelta(hours=2))
    assert "1 recipient(s) due now" in run("retry", message.queue_id.lower())
    rcpt = message.recipients.get()
    assert rcpt.next_attempt_at <= timezone.now() and rcpt.state == QueuedRecipient.State.QUEUED


def test_delete_removes_the_message_and_its_recipients(bob):
    message = enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    assert "deleted" in run("delete", message.queue_id)
    assert not QueuedMessage.objects.exists() and not QueuedRecipient.objects.exists()


def test_an_unknown_id_is_a_clear_error(db):
    with pytest.raises(CommandError, match="no queued message NOPE"):
        run("retry", "nope")
    with pytest.raises(CommandError, match="needs a queue ID"):
        run("delete")
