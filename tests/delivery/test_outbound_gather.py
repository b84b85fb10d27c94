"""A draining worker pauses after a short claim round so that mail gathers for the next one;
the pause ends early once nothing more is being queued, so the last messages of a burst do not
wait out the whole pause. The same on SQLite and PostgreSQL: the worker looks at the queue
itself. Wide margins: these are not timings of the code."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from delivery import queue
from delivery.models import QueuedMessage

pytestmark = pytest.mark.django_db(transaction=True)   # mail queued by another connection


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(queue, "QUIET_SECONDS", 0.2)
    return 0.2


def queue_a_message() -> None:
    QueuedMessage.objects.create(sender="bob@example.org", data=b"Subject: x\r\n\r\nx\r\n", size=17)


def timed_pause(seconds: float) -> float:
    started = time.monotonic()
    queue.gather_pause(seconds)
    return time.monotonic() - started


def test_the_pause_ends_early_when_nothing_is_being_queued(quiet):
    assert timed_pause(5.0) < 2.5


def test_mail_queued_before_the_pause_does_not_lengthen_it(quiet):
    for _ in range(20):
        queue_a_message()
    assert timed_pause(5.0) < 2.5


def test_the_whole_pause_is_taken_while_mail_keeps_being_queued(quiet):
    stop = threading.Event()

    def keep_queueing():
        try:
            while not stop.is_set():
                queue_a_message()
                time.sleep(0.01)
        finally:
            connection.close()

    submission = threading.Thread(target=keep_queueing)
    submission.start()
    try:
        assert timed_pause(1.0) >= 0.9
    finally:
        stop.set()
        submission.join()


def test_the_newest_message_on_the_queue_is_seen_as_soon_as_it_is_committed():
    assert queue.newest_queued() == 0
    queue_a_message()
    first = queue.newest_queued()
    queue_a_message()
    assert queue.newest_queued() > first > 0
