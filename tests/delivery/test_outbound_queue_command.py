"""`python manage.py queue [list | retry ID | delete ID]` (DESIGN.md contract), and what an operator
of Postfix has beside: retry everything, delete a sender's flood, show a message."""

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


def test_list_reads_no_message_bytes(bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    with CaptureQueriesContext(connection) as queries:
        assert "x@remote.test" in run("list")
    assert not any('"data"' in q["sql"] for q in queries.captured_queries)


def test_retry_all_makes_every_waiting_message_due_now(bob):
    later = timezone.now() + dt.timedelta(hours=2)
    messages = [enqueue("bob@example.org", [f"x{i}@remote.test"], MESSAGE) for i in range(3)]
    QueuedRecipient.objects.update(state="deferred", next_attempt_at=later)
    held = messages[2].recipients.get()
    QueuedRecipient.objects.filter(pk=held.pk).update(lease_owner="a-worker", lease_until=later)
    assert "2 recipient(s) due now" in run("retry", "--all")
    assert QueuedRecipient.objects.filter(state="queued", next_attempt_at__lte=timezone.now()).count() == 2
    held.refresh_from_db()
    assert held.state == "deferred" and held.lease_owner == "a-worker"


def test_delete_sender_removes_that_senders_waiting_messages_only(bob):
    flood = [enqueue("bob@example.org", [f"x{i}@remote.test"], MESSAGE) for i in range(3)]
    flood[0].recipients.update(state="delivered")     # gone already: not part of the flood
    other = enqueue("alice@example.org", ["y@remote.test"], MESSAGE)
    assert "2 message(s) from <BOB@example.org> deleted" in run("delete", "--sender", "BOB@example.org")
    assert set(QueuedMessage.objects.values_list("pk", flat=True)) == {flood[0].pk, other.pk}
    assert "nothing queued from <bob@example.org>" in run("list", "--sender", "bob@example.org")
    assert "y@remote.test" in run("list", "--sender", "alice@example.org")


def test_show_prints_the_envelope_and_header_and_the_body_only_when_asked(bob):
    message = enqueue("bob@example.org", ["x@remote.test", "z@remote.test"], MESSAGE)
    message.recipients.filter(address="z@remote.test").update(state="deferred", last_reply="451 4.7.1 Greylisted")
    out = run("show", message.queue_id.lower())
    assert f"queue id: {message.queue_id}" in out and "sender: <bob@example.org>" in out
    assert "z@remote.test  deferred" in out and "451 4.7.1 Greylisted" in out
    assert "Subject: s" in out and "body" not in out
    assert run("show", message.queue_id, "--body").rstrip().endswith("body")


def test_a_filter_and_an_id_together_or_neither_is_a_clear_error(bob):
    message = enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    with pytest.raises(CommandError, match="not both"):
        run("delete", message.queue_id, "--sender", "bob@example.org")
    with pytest.raises(CommandError, match=r"needs a queue ID \(or --all\)"):
        run("retry")
    with pytest.raises(CommandError, match="needs a queue ID"):
        run("show")
    assert QueuedMessage.objects.filter(pk=message.pk).exists()
