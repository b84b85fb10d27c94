"""The queue executed by real Celery workers through the real broker (not eager mode).

Beat claims due rows and dispatches short delivery tasks; a worker killed with SIGKILL in the
middle of an SMTP conversation leaves a lease that runs out, and the restarted worker delivers
the message exactly once.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from delivery.models import QueuedRecipient
from delivery.queue import enqueue
from tests.delivery.outbound_peers import Sink
from tests.support import ROOT, subprocess_env

MESSAGE = b"From: Bob <bob@example.org>\r\nTo: x@remote.test\r\nSubject: via celery\r\n\r\nHello.\r\n"


@pytest.fixture
def sink(dns_server, settings):
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    with Sink() as s:
        s.handler.stall_seconds = 20
        settings.SMTP_OUTBOUND_PORT = s.port
        yield s


@pytest.fixture
def start_worker(transactional_db, sink, dns_server, tmp_path):
    """Start a real `celery worker -B` that delivers to the sink; every worker is stopped after."""
    procs: list[subprocess.Popen] = []
    env = subprocess_env(SMTP_OUTBOUND_PORT=str(sink.port), DNS_RESOLVERS=dns_server.address,
                         QUEUE_SWEEP_INTERVAL="0.5", QUEUE_LEASE_SECONDS="4", QUEUE_KICK_INTERVAL="0")

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mailhost", "worker", "-B", "--pool=solo",
             "--without-gossip", "--without-mingle", "--loglevel=INFO",
             "-s", str(tmp_path / f"beat-{len(procs)}")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(condition, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_beat_and_a_worker_deliver_queued_mail_through_the_broker(bob, start_worker, sink):
    message = enqueue("bob@example.org", ["x@remote.test", "y@remote.test"], MESSAGE)
    start_worker()
    wait_until(lambda: len(sink.messages) >= 1)
    wait_until(lambda: not message.recipients.exclude(state=QueuedRecipient.State.DELIVERED).exists())
    assert sorted(sink.messages[0].rcpt_tos) == ["x@remote.test", "y@remote.test"]


def test_a_worker_killed_mid_delivery_delivers_exactly_once_after_restart(bob, start_worker, sink):
    message = enqueue("bob@example.org", ["slow@remote.test"], MESSAGE)
    worker = start_worker()
    wait_until(lambda: "slow@remote.test" in sink.handler.rcpt_attempts)
    rcpt = message.recipients.get()
    assert rcpt.state == QueuedRecipient.State.IN_FLIGHT
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its embedded beat, no goodbye
    worker.wait(timeout=10)
    assert sink.messages == []

    start_worker()
    wait_until(lambda: len(sink.messages) == 1)
    wait_until(lambda: message.recipients.get().state == QueuedRecipient.State.DELIVERED)
    time.sleep(2)  # several more sweeps: nothing is sent again
    assert len(sink.messages) == 1
    assert message.recipients.get().attempts == 1


def test_sweeps_and_kicks_that_wait_too_long_for_a_worker_are_dropped_unrun(db, monkeypatch, settings):
    """Every worker busy means every worker is draining the queue: a sweep queued behind them
    would only claim again what they claim anyway, so it expires instead of piling up."""
    from celery.signals import before_task_publish

    from delivery import queue

    published = []

    def note(sender=None, headers=None, **_):
        published.append((sender, headers.get("expires")))

    before_task_publish.connect(note)
    try:
        monkeypatch.setattr(queue, "_last_kick", 0.0)
        queue.kick()
        wait_until(lambda: published, timeout=5)
    finally:
        before_task_publish.disconnect(note)
    [(task, expires)] = published
    assert task == "delivery.dispatch_due" and expires is not None
    sweep = settings.CELERY_BEAT_SCHEDULE["delivery-dispatch-due"]
    assert sweep["options"]["expires"] == sweep["schedule"] == settings.QUEUE_SWEEP_INTERVAL


def test_mail_queued_while_kicks_are_throttled_gets_one_kick_when_the_interval_ends(monkeypatch, settings,
                                                                                     published_tasks):
    """Without it the last messages of a burst waited for a worker still draining, or else for
    the beat sweep, seconds away."""
    from delivery import queue

    settings.QUEUE_KICK_INTERVAL = 1.0
    monkeypatch.setattr(queue, "_last_kick", 0.0)
    start = time.monotonic()
    queue.kick()
    wait_until(lambda: published_tasks, timeout=5)
    assert published_tasks[0].at - start < 0.8, "the first at once, not when the interval ends"
    for _ in range(4):
        queue.kick()
    wait_until(lambda: len(published_tasks) == 2, timeout=5)
    assert published_tasks[1].at - published_tasks[0].at >= 0.95, "one more for the four throttled, when it ends"
    time.sleep(1.2)
    assert len(published_tasks) == 2, "not one per message"
    again = time.monotonic()
    queue.kick()
    wait_until(lambda: len(published_tasks) == 3, timeout=5)
    assert published_tasks[2].at - again < 0.8, "the interval is over: at once again"
    assert {p.task for p in published_tasks} == {"delivery.dispatch_due"}


def test_kicking_never_waits_for_the_broker(monkeypatch, published_tasks):
    """The caller (an SMTP session about to answer 250, a portal request) returns while the
    kick is still on its way; the kick itself still goes out."""
    from delivery import queue

    broker_answers = threading.Event()
    original = queue._send_kick

    def slow_broker():
        broker_answers.wait(10)
        original()

    monkeypatch.setattr(queue, "_last_kick", 0.0)
    monkeypatch.setattr(queue, "_send_kick", slow_broker)
    queue.kick()
    assert published_tasks == [], "kick() returned before the broker took the kick"
    broker_answers.set()
    wait_until(lambda: published_tasks, timeout=5)
    assert [p.task for p in published_tasks] == ["delivery.dispatch_due"]


def test_queue_retry_sends_its_kick_before_the_command_exits(db, bob, published_tasks):
    """A command's process ends right after it: a kick left to a kicker thread would die with it."""
    from django.core.management import call_command

    message = enqueue("bob@example.org", ["x@remote.test"], MESSAGE)
    published_tasks.clear()
    call_command("queue", "retry", message.queue_id, stdout=io.StringIO())
    assert [p.task for p in published_tasks] == ["delivery.dispatch_due"]


def test_a_child_forked_while_a_kick_waited_for_its_interval_still_kicks(monkeypatch, settings):
    """runsmtp forks its copies: a timer of the parent's does not run in the child, so the child
    must not take it for a kick on its way."""
    from delivery import queue

    settings.QUEUE_KICK_INTERVAL = 0.2
    monkeypatch.setattr(queue, "_last_kick", 0.0)
    sent = []
    monkeypatch.setattr(queue, "_send_kick", lambda: sent.append(os.getpid()))
    queue.kick()
    queue.kick()  # now a timer waits in this process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: kick while throttled, then report whether a kick went out
        try:
            queue.kick()
            time.sleep(0.6)
            os.write(write, b"1" if os.getpid() in sent else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(read)
