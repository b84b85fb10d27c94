"""SQLite writers of every process take turns on a lock file, and a turn given up wakes the
next writer at once through a FIFO beside the database (mailhost/sqlite3/base.py).

Real connections to the test database in real threads and processes; the poll interval is
stretched where a test must show that only the wake-up can explain how soon a writer got in.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, transaction

from delivery.models import MessageLog
from mailhost.sqlite3 import base


@pytest.fixture
def sqlite_file(transactional_db):
    if connection.vendor != "sqlite":
        pytest.skip("the writer turns are SQLite's")
    return connection.settings_dict["NAME"]


def log_row(queue_id: str) -> None:
    MessageLog.objects.create(direction="submission", result="accepted", queue_id=queue_id)


def hold_turn_in_thread(seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another thread's transaction that holds the writer turn for `seconds`."""
    holding = threading.Event()

    def hold():
        try:
            with transaction.atomic():
                log_row("held")
                holding.set()
                time.sleep(seconds)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    return thread, holding


def test_a_writer_waiting_for_the_turn_gets_it_the_moment_it_is_given_up(sqlite_file, monkeypatch):
    # Polling alone would first look again after 30 s: only the wake-up explains a quick turn.
    monkeypatch.setattr(base, "FIRST_POLL", 30.0)
    monkeypatch.setattr(base, "LONGEST_POLL", 30.0)
    holder, _ = hold_turn_in_thread(0.5)
    started = time.monotonic()
    with transaction.atomic():
        log_row("waited")
    waited = time.monotonic() - started
    holder.join(10)
    assert 0.3 < waited < 5, "waited for the holder, and not a poll interval longer"
    assert set(MessageLog.objects.values_list("queue_id", flat=True)) == {"held", "waited"}


def test_a_holder_that_dies_without_waking_anyone_is_noticed_by_the_poll(sqlite_file, monkeypatch):
    monkeypatch.setattr(base, "LONGEST_POLL", 0.05)
    code = (f"import fcntl, os, sys, time\nfd = os.open({sqlite_file + '-writers'!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(0.5)\nos._exit(0)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with transaction.atomic():
        log_row("after the crash")
    assert time.monotonic() - started < 5
    assert holder.wait(10) == 0
    assert MessageLog.objects.filter(queue_id="after the crash").exists()


def test_writers_of_one_process_wait_for_each_other_on_its_own_lock_not_on_the_wake_up_channel(
        sqlite_file, monkeypatch):
    # A worker's delivery lanes are threads of one process: at every byte on the FIFO each of
    # them would wake to find the turn taken again. Only one per process may go to the file.
    sleeps = []
    original = base._wait_for_release
    monkeypatch.setattr(base, "_wait_for_release", lambda *args: (sleeps.append(1), original(*args)))
    holder, _ = hold_turn_in_thread(0.5)

    def write(n: int) -> None:
        try:
            with transaction.atomic():
                log_row(f"lane {n}")
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers + [holder]:
        writer.join(10)
    assert MessageLog.objects.filter(queue_id__startswith="lane").count() == 3
    assert sleeps == [], "the threads queued on the process's lock, and were woken one at a time"


def test_a_child_forked_while_a_thread_held_the_turn_has_a_free_lock_of_its_own(sqlite_file):
    holder, _ = hold_turn_in_thread(1.0)
    assert base.process_turn(sqlite_file).locked()
    pid = os.fork()
    if pid == 0:    # the child: its copy of the held lock would never be released
        os._exit(0 if not base.process_turn(sqlite_file).locked() else 1)
    _, status = os.waitpid(pid, 0)
    holder.join(10)
    assert os.waitstatus_to_exitcode(status) == 0


def test_writers_of_several_processes_never_hold_the_turn_together(sqlite_file):
    # Each child counts how often it found the turn free while it believed it held it.
    code = """
import fcntl, os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhost.settings")
django.setup()
from django.db import connection, transaction
from django.conf import settings
settings.DATABASES["default"]["NAME"] = sys.argv[1]
connection.settings_dict["NAME"] = sys.argv[1]
probe = os.open(sys.argv[1] + "-writers", os.O_RDWR)
overlaps = 0
for n in range(200):
    with transaction.atomic():
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            overlaps += 1
            fcntl.flock(probe, fcntl.LOCK_UN)
        with connection.cursor() as cursor:
            cursor.execute("UPDATE delivery_messagelog SET size = size + 1 WHERE queue_id = 'counter'")
print(overlaps)
"""
    MessageLog.objects.create(direction="submission", result="accepted", queue_id="counter", size=0)
    env = {**os.environ, "PYTHONPATH": str(base.__file__).rsplit("/mailhost/", 1)[0]}
    children = [subprocess.Popen([sys.executable, "-c", code, sqlite_file], stdout=subprocess.PIPE, text=True,
                                 env=env) for _ in range(3)]
    outputs = [child.communicate(timeout=120)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0]
    assert outputs == ["0", "0", "0"], "the turn was always held while a transaction ran"
    assert MessageLog.objects.get(queue_id="counter").size == 600, "no update was lost"


def test_the_wake_up_channel_is_a_fifo_and_anything_else_there_means_polling_only(tmp_path):
    fd = base._open_fifo(str(tmp_path / "db-writers-wake"))
    try:
        assert fd is not None and stat.S_ISFIFO(os.fstat(fd).st_mode)
        base._announce_release(fd)
        base._wait_for_release(fd, 5)   # the byte is there: no wait
        started = time.monotonic()
        base._wait_for_release(fd, 0.2)  # drained: the timeout
        assert time.monotonic() - started >= 0.15
    finally:
        os.close(fd)
    (tmp_path / "plain-writers-wake").write_text("not a fifo")
    assert base._open_fifo(str(tmp_path / "plain-writers-wake")) is None
    started = time.monotonic()
    base._wait_for_release(None, 0.1)
    assert time.monotonic() - started >= 0.09


def test_a_full_channel_never_blocks_the_writer_giving_up_its_turn(tmp_path):
    fd = base._open_fifo(str(tmp_path / "db-writers-wake"))
    try:
        for _ in range(70000):  # more than a pipe holds
            base._announce_release(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert flags & os.O_NONBLOCK
        base._wait_for_release(fd, 1)
        with pytest.raises(BlockingIOError):
            os.read(fd, 1)  # a wake-up drains everything that piled up
    finally:
        os.close(fd)


def test_a_channel_that_went_away_never_fails_a_commit_and_waiters_fall_back_to_polling():
    gone = 999_999  # no such descriptor
    base._announce_release(gone)   # after COMMIT: must not raise
    started = time.monotonic()
    base._wait_for_release(gone, 0.1)
    assert time.monotonic() - started >= 0.09
