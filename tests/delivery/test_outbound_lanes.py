"""A worker process delivers to several destinations at once (QUEUE_PARALLEL_DESTINATIONS).

Over the internet a delivery is mostly waiting for the peer's replies; one destination at a
time per worker process would cap a worker at a few messages a second to distant peers. The
peer here answers DATA only once several sessions are waiting in DATA together, which only
deliveries running side by side can satisfy.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from delivery import outbound, queue, routing
from delivery.models import QueuedRecipient
from delivery.queue import enqueue
from tests.delivery.outbound_peers import Sink

State = QueuedRecipient.State
MESSAGE = b"From: Bob <bob@example.org>\r\nTo: someone@remote.test\r\nSubject: hello\r\n\r\nHi there.\r\n"


@pytest.fixture
def peer(dns_server, settings):
    """One MX host for the domains d0.remote ... d7.remote."""
    dns_server.zone("remote.test", "mx IN A 127.0.0.2")
    for n in range(8):
        dns_server.zone(f"d{n}.remote", "@ IN MX 10 mx.remote.test.")
    with Sink() as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        yield sink


def answer_data_only_together(sink: Sink, sessions: int, seconds: float = 10.0) -> None:
    """The peer holds each DATA until `sessions` sessions wait in DATA at once (451 after `seconds`)."""
    handler, original = sink.handler, sink.handler.handle_DATA
    waiting = {"now": 0, "most": 0}

    async def handle_DATA(server, session, envelope):
        waiting["now"] += 1
        waiting["most"] = max(waiting["most"], waiting["now"])
        deadline = time.monotonic() + seconds
        while waiting["most"] < sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        waiting["now"] -= 1
        if waiting["most"] < sessions:
            return "451 4.3.0 Not enough company"
        return await original(server, session, envelope)

    handler.handle_DATA = handle_DATA


def run_queue() -> None:
    run, rows = queue.take_over(queue.claim_due())
    outbound.deliver_batch(run, rows)


def test_a_worker_delivers_to_several_destinations_at_once_each_over_its_own_connection(
        transactional_db, bob, peer, settings):
    settings.QUEUE_PARALLEL_DESTINATIONS = 3
    answer_data_only_together(peer, sessions=3)
    messages = [enqueue("bob@example.org", [f"someone@d{n}.remote"], MESSAGE) for n in range(3)]
    run_queue()
    assert [m.recipients.get().state for m in messages] == [State.DELIVERED] * 3
    assert peer.handler.sessions == 3
    assert len(outbound.parked()) == 3, "each lane's connection is kept for the next run"


def test_with_one_destination_at_a_time_the_peer_waits_for_company_in_vain(transactional_db, bob, peer, settings):
    settings.QUEUE_PARALLEL_DESTINATIONS = 1
    answer_data_only_together(peer, sessions=2, seconds=0.5)
    messages = [enqueue("bob@example.org", [f"someone@d{n}.remote"], MESSAGE) for n in range(2)]
    run_queue()
    assert [m.recipients.get().state for m in messages] == [State.DEFERRED] * 2
    assert peer.handler.sessions == 0


def test_every_recipient_of_many_destinations_is_delivered_exactly_once(transactional_db, bob, peer, settings):
    settings.QUEUE_PARALLEL_DESTINATIONS = 4
    messages = [enqueue("bob@example.org", [f"r{i}@d{n}.remote" for i in range(2)], MESSAGE)
                for n in range(8) for _ in range(2)]
    run_queue()
    received = peer.wait_for(16)
    assert sorted(rcpt for m in received for rcpt in m.rcpt_tos) == sorted(
        f"r{i}@d{n}.remote" for n in range(8) for _ in range(2) for i in range(2))
    rows = QueuedRecipient.objects.filter(message__in=messages)
    assert {(r.state, r.attempts) for r in rows} == {(State.DELIVERED, 1)}
    assert peer.handler.sessions <= 4


def test_a_lane_that_breaks_leaves_the_other_destinations_to_the_rest_and_reports_its_error(
        transactional_db, bob, peer, settings, monkeypatch):
    settings.QUEUE_PARALLEL_DESTINATIONS = 3
    lookup = routing.mx_hosts

    def mx_hosts(domain, *args, **kwargs):
        if domain == "d0.remote":
            raise RuntimeError("a bug of ours")
        return lookup(domain, *args, **kwargs)

    monkeypatch.setattr(routing, "mx_hosts", mx_hosts)
    broken = enqueue("bob@example.org", ["someone@d0.remote"], MESSAGE)
    fine = [enqueue("bob@example.org", [f"someone@d{n}.remote"], MESSAGE) for n in range(1, 6)]
    with pytest.raises(RuntimeError, match="a bug of ours"):
        run_queue()
    assert [m.recipients.get().state for m in fine] == [State.DELIVERED] * 5
    assert broken.recipients.get().state == State.IN_FLIGHT, "left to its lease, as before"


def test_inside_a_callers_transaction_every_destination_goes_one_after_another_in_its_thread(bob, peer, settings):
    settings.QUEUE_PARALLEL_DESTINATIONS = 4
    messages = [enqueue("bob@example.org", [f"someone@d{n}.remote"], MESSAGE) for n in range(3)]
    run_queue()
    assert [m.recipients.get().state for m in messages] == [State.DELIVERED] * 3
    assert peer.handler.sessions == 1, "one connection went from one domain to the next"
