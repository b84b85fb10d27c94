"""A draining worker pauses after a short claim round so that mail gathers for the next one;
on SQLite the pause ends early once nothing more is being queued, so the last messages of a
burst do not wait out the whole pause. Wide margins: these are not timings of the code."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from delivery import queue

pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="on PostgreSQL the pause is a plain sleep (no FIFO beside the database to announce on)",
)


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(queue, "QUIET_SECONDS", 0.2)
    return 0.2


def timed_pause(seconds: float) -> float:
    started = time.monotonic()
    queue.gather_pause(seconds)
    return time.monotonic() - started


@pytest.mark.django_db
def test_the_pause_ends_early_when_nothing_is_being_queued(quiet):
    assert timed_pause(5.0) < 2.5


@pytest.mark.django_db
def test_mail_queued_before_the_pause_does_not_lengthen_it(quiet):
    for _ in range(20):
        queue.announce_queued()
    assert timed_pause(5.0) < 2.5


@pytest.mark.django_db
def test_the_whole_pause_is_taken_while_mail_keeps_being_queued(quiet):
    stop = threading.Event()

    def keep_queueing():
        while not stop.is_set():
            queue.announce_queued()
            time.sleep(0.01)

    announcer = threading.Thread(target=keep_queueing)
    announcer.start()
    try:
        assert timed_pause(1.0) >= 0.9
    finally:
        stop.set()
        announcer.join()
