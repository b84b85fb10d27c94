"""The queue executed by real Celery workers through the real broker (not eager mode).

Beat claims due rows and dispatches short delivery tasks; a worker killed with SIGKILL in the
middle of an SMTP conversation leaves a lease that runs out, and the restarted worker delivers
the message exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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

    settings.QUEUE_KICK_INTERVAL = 0.3
    monkeypatch.setattr(queue, "_last_kick", 0.0)
    start = time.monotonic()
    for _ in range(5):
        queue.kick()
    assert len(published_tasks) == 1, "the first at once"
    deadline = time.monotonic() + 5
    while len(published_tasks) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(published_tasks) == 2, "one more for the four throttled, when the interval ends"
    assert published_tasks[1].at - start >= 0.25
    time.sleep(0.5)
    assert len(published_tasks) == 2, "not one per message"
    queue.kick()
    assert len(published_tasks) == 3, "the interval is over: at once again"
    assert {p.task for p in published_tasks} == {"delivery.dispatch_due"}


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
