"""What keeps the outbound path fast without giving up its guarantees (bench/smtp_outbound).

Connections are parked briefly and reused for the next batch to the same MX host, MX answers are
cached per worker process, a sweep claims each domain in as few transactions as it can, and an
SMTP session does not ask the database twice whether its login may use a sender address.
"""

from __future__ import annotations

import re
import time

import pytest

from delivery import outbound, queue, routing, smtp_auth
from delivery.models import QueuedRecipient
from delivery.queue import enqueue
from mailboxes.provisioning import create_alias
from tests.delivery.outbound_peers import Sink

State = QueuedRecipient.State
MESSAGE = b"From: Bob <bob@example.org>\r\nTo: someone@remote.test\r\nSubject: hello\r\n\r\nHi there.\r\n"


@pytest.fixture
def sink(dns_server, settings):
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    dns_server.zone("other.remote", "@ IN MX 10 mx.remote.test.")
    with Sink() as s:
        settings.SMTP_OUTBOUND_PORT = s.port
        yield s


def run_queue() -> None:
    for token in queue.claim_due():
        run, rows = queue.take_over(token)
        outbound.deliver_batch(run, rows)


def test_batches_for_two_domains_on_the_same_mx_host_share_one_connection(bob, sink):
    enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    enqueue("bob@example.org", ["b@other.remote"], MESSAGE)
    run_queue()
    assert len(sink.wait_for(2)) == 2
    assert sink.handler.sessions == 1


def test_with_the_connection_cache_off_each_batch_opens_its_own_connection(bob, sink, settings):
    settings.SMTP_CONNECTION_CACHE_TIME = 0
    enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    enqueue("bob@example.org", ["b@other.remote"], MESSAGE)
    run_queue()
    assert len(sink.wait_for(2)) == 2
    assert sink.handler.sessions == 2 and not outbound.parked()


def test_a_parked_connection_the_peer_dropped_is_replaced_and_the_mail_still_goes(bob, dns_server, settings):
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    with Sink() as before:
        settings.SMTP_OUTBOUND_PORT = before.port
        first = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
        run_queue()
        before.wait_for(1)
        assert outbound.parked(), "the healthy connection was parked"
    with Sink(port=before.port) as again:
        second = enqueue("bob@example.org", ["b@remote.test"], MESSAGE)
        run_queue()
        assert [m.rcpt_tos for m in again.wait_for(1)] == [["b@remote.test"]]
    assert first.recipients.get().state == State.DELIVERED
    assert second.recipients.get().state == State.DELIVERED


def test_a_parked_connection_older_than_the_cache_time_is_closed_not_reused(bob, sink, settings):
    enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    run_queue()
    sink.wait_for(1)
    settings.SMTP_CONNECTION_CACHE_TIME = 0.000001
    enqueue("bob@example.org", ["b@remote.test"], MESSAGE)
    run_queue()
    assert len(sink.wait_for(2)) == 2 and sink.handler.sessions == 2


def test_mx_answers_are_cached_within_their_ttl_unless_the_cache_is_off(dns_server, settings):
    routing._caches.clear()
    dns_server.zone("moving.test", "@ 3600 IN MX 10 mx1.moving.test.", "mx1 IN A 127.0.0.2", "mx2 IN A 127.0.0.2")
    assert [h.name for h in routing.mx_hosts("moving.test")] == ["mx1.moving.test"]
    dns_server.zone("moving.test", "@ 3600 IN MX 10 mx2.moving.test.", "mx1 IN A 127.0.0.2", "mx2 IN A 127.0.0.2")
    assert [h.name for h in routing.mx_hosts("moving.test")] == ["mx1.moving.test"]
    settings.SMTP_DNS_CACHE = False
    assert [h.name for h in routing.mx_hosts("moving.test")] == ["mx2.moving.test"]


def test_a_domains_hosts_are_remembered_until_the_first_of_their_answers_runs_out(dns_server, settings,
                                                                                    monkeypatch):
    dns_server.zone("moving.test", "@ 3600 IN MX 10 mx1.moving.test.", "@ 3600 IN MX 10 mx3.moving.test.",
                    "mx1 30 IN A 127.0.0.2", "mx3 3600 IN A 127.0.0.3")
    assert sorted(h.name for h in routing.mx_hosts("moving.test")) == ["mx1.moving.test", "mx3.moving.test"]
    orders = {tuple(h.name for h in routing.mx_hosts("moving.test")) for _ in range(40)}
    assert len(orders) == 2     # equal preferences are still shuffled on every call
    dns_server.zone("moving.test", "@ 3600 IN MX 10 mx2.moving.test.", "mx2 IN A 127.0.0.2")
    routing._caches.clear()     # dnspython's own cache would answer as before: only the memo is tested
    assert {h.name for h in routing.mx_hosts("moving.test")} == {"mx1.moving.test", "mx3.moving.test"}
    later = time.time() + 31    # mx1's A record (TTL 30) has run out: everything is asked again
    monkeypatch.setattr(routing.time, "time", lambda: later)
    assert [h.name for h in routing.mx_hosts("moving.test")] == ["mx2.moving.test"]


def test_a_lookup_that_failed_in_part_is_not_remembered(dns_server):
    dns_server.zone("partial.test", "@ IN MX 10 mx1.partial.test.", "@ IN MX 20 mx.unserved.test.",
                    "mx1 IN A 127.0.0.2")
    assert [h.name for h in routing.mx_hosts("partial.test")] == ["mx1.partial.test"]
    assert not any(key[0] == "partial.test" for key in routing._memo)


def test_a_sweep_splits_a_long_queue_for_one_domain_into_batches_up_to_the_concurrency_limit(bob, settings):
    settings.QUEUE_BATCH_SIZE = 2
    settings.QUEUE_DESTINATION_CONCURRENCY = 5
    enqueue("bob@example.org", [f"r{n}@remote.test" for n in range(5)], MESSAGE)
    tokens = queue.claim_due()
    sizes = sorted(QueuedRecipient.objects.filter(lease_owner=t).count() for t in tokens)
    assert sizes == [1, 2, 2]
    assert queue.claim_due() == []  # everything is leased: a second sweep gets nothing


def test_a_sweep_respects_batches_already_in_flight_for_a_domain(bob, settings):
    settings.QUEUE_BATCH_SIZE = 1
    settings.QUEUE_DESTINATION_CONCURRENCY = 2
    enqueue("bob@example.org", [f"r{n}@remote.test" for n in range(4)], MESSAGE)
    assert len(queue.claim_due()) == 2
    assert queue.claim_due() == []
    assert QueuedRecipient.objects.filter(lease_owner="").count() == 2


def test_a_session_asks_the_database_once_whether_it_may_send_as_an_address(bob, django_assert_num_queries):
    identity = smtp_auth.Identity(login="bob@example.org", mailbox_id=bob.pk)
    assert identity.can_send_as("bob@example.org")
    with django_assert_num_queries(0):
        assert identity.can_send_as("Bob@example.org")


def test_a_new_alias_counts_for_a_session_once_its_remembered_answer_expires(bob, monkeypatch):
    identity = smtp_auth.Identity(login="bob@example.org", mailbox_id=bob.pk)
    assert not identity.can_send_as("sales@example.org")
    create_alias("sales@example.org", ["bob@example.org"])
    monkeypatch.setattr(smtp_auth, "SEND_AS_CACHE_SECONDS", 0)
    assert identity.can_send_as("sales@example.org")


def test_one_run_takes_over_the_batches_of_several_domains_and_delivers_them_all(bob, sink):
    first = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    second = enqueue("bob@example.org", ["b@other.remote"], MESSAGE)
    tokens = queue.claim_due()
    assert len(tokens) == 2
    run, rows = queue.take_over(tokens)
    assert queue.take_over(tokens)[1] == [], "a duplicated task finds nothing"
    outbound.deliver_batch(run, rows)
    assert len(sink.wait_for(2)) == 2 and sink.handler.sessions == 1
    assert {first.recipients.get().state, second.recipients.get().state} == {State.DELIVERED}


def test_a_worker_keeps_delivering_what_is_due_until_nothing_is(bob, sink, settings):
    settings.QUEUE_BATCH_SIZE = 1
    messages = [enqueue("bob@example.org", [f"r{n}@remote.test"], MESSAGE) for n in range(3)]
    assert outbound.deliver_due(seconds=30, batches=1) == 3
    assert len(sink.wait_for(3)) == 3
    assert all(m.recipients.get().state == State.DELIVERED and m.recipients.get().attempts == 1 for m in messages)
    assert outbound.deliver_due(seconds=30, batches=1) == 0


def test_a_message_accepted_for_several_recipients_is_recorded_in_one_go(bob, sink):
    from delivery.models import MessageLog

    message = enqueue("bob@example.org", ["a@remote.test", "b@remote.test"], MESSAGE)
    [token] = queue.claim_due()
    run, rows = queue.take_over(token)
    outbound.deliver_batch(run, rows)
    sink.wait_for(1)
    assert [r.state for r in message.recipients.all()] == [State.DELIVERED] * 2
    assert MessageLog.objects.filter(queue_id=message.queue_id, result="delivered").count() == 2


def test_enqueue_reads_the_sender_domain_and_its_keys_once_then_remembers_them(bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    with CaptureQueriesContext(connection) as queries:
        message = enqueue("bob@example.org", ["b@remote.test"], MESSAGE)
    # The message row and its recipient rows, nothing else (on PostgreSQL they bypass Django's
    # cursor, which binds on the client, and are not even captured).
    statements = [re.sub(r"^\d+ times: ", "", q["sql"]) for q in queries.captured_queries]  # executemany
    assert all(sql.startswith("INSERT") for sql in statements) and len(statements) <= 2
    assert message.recipients.get().address == "b@remote.test"


def test_a_retired_key_stops_signing_at_once_in_the_process_that_retired_it(bob):
    from delivery import signing

    assert b"DKIM-Signature:" in bytes(enqueue("bob@example.org", ["a@remote.test"], MESSAGE).data)
    bob.domain.active_dkim_key().retire()
    assert signing.hosted_domain("example.org")[1] == [], "saving a key forgets the remembered keys"
    assert b"DKIM-Signature:" not in bytes(enqueue("bob@example.org", ["b@remote.test"], MESSAGE).data)


def test_a_short_sweep_serves_the_domain_whose_mail_waited_longest(bob):
    import datetime as dt

    from django.utils import timezone

    old = enqueue("bob@example.org", ["a@zz-last.test"], MESSAGE)
    enqueue("bob@example.org", ["b@aa-first.test"], MESSAGE)
    old.recipients.update(next_attempt_at=timezone.now() - dt.timedelta(minutes=5))
    [token] = queue.claim_due(max_batches=1)
    assert QueuedRecipient.objects.get(lease_owner=token).domain == "zz-last.test"


def test_mail_from_is_answered_on_the_event_loop_only_from_the_sessions_remembered_verdict(bob, monkeypatch):
    from delivery import replies, smtp_policy

    identity = smtp_auth.Identity(login="bob@example.org", mailbox_id=bob.pk)
    assert smtp_policy.submission_sender_reply("bob@example.org", identity, without_database=True) is None
    assert smtp_policy.submission_sender_reply("boss@example.org", identity) == replies.SENDER_NOT_ALLOWED
    assert smtp_policy.submission_sender_reply("bob@example.org", identity) == replies.SENDER_OK
    for address, reply in (("bob@example.org", replies.SENDER_OK), ("Boss@example.org", replies.SENDER_NOT_ALLOWED),
                           ("<>", replies.NULL_SENDER_NOT_ALLOWED)):
        assert smtp_policy.submission_sender_reply(address, identity, without_database=True) == reply
    monkeypatch.setattr(smtp_auth, "SEND_AS_CACHE_SECONDS", 0)
    assert smtp_policy.submission_sender_reply("bob@example.org", identity, without_database=True) is None


def test_a_draining_worker_claims_for_itself_and_marks_the_rows_in_flight_in_the_same_update(bob):
    first = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    second = enqueue("bob@example.org", ["b@other.remote"], MESSAGE)
    assert queue.claim_due(run="run-1") == ["run-1", "run-1"], "one entry per batch claimed"
    rows = queue.rows_of("run-1")
    assert [r.message_id for r in rows] == [second.pk, first.pk]  # in delivery order: by domain
    assert {(r.state, r.lease_until is not None) for r in rows} == {(State.IN_FLIGHT, True)}
    assert queue.claim_due(run="run-2") == [], "a second draining worker finds nothing to share"


def test_rows_claimed_in_flight_by_a_worker_that_died_are_claimed_again_once_the_lease_runs_out(bob):
    import datetime as dt

    from django.utils import timezone

    message = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    queue.claim_due(run="dead-run")
    assert queue.claim_due(run="next-run") == []
    assert queue.claim_due(now=timezone.now() + dt.timedelta(seconds=301), run="next-run") == ["next-run"]
    assert message.recipients.get().lease_owner == "next-run"


def _columns(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_a_runs_rows_come_from_a_statement_compiled_once_and_equal_what_the_queryset_gives(bob, monkeypatch,
                                                                                            django_assert_num_queries):
    from django.db.models.sql.compiler import SQLCompiler

    from delivery.models import QueuedMessage

    enqueue("bob@example.org", ["a@remote.test", "b@other.remote"], MESSAGE)
    bounce = QueuedMessage.objects.create(sender="", data=b"a DSN", size=5, source=QueuedMessage.Source.DSN)
    QueuedRecipient.objects.create(message=bounce, address="bob@remote.test", domain="remote.test")
    queue.claim_due(run="run-1")

    rows = queue.rows_of("run-1")
    expected = list(queue._rows_of_queryset("run-1"))
    assert [r.pk for r in rows] == [r.pk for r in expected] and len(rows) == 3
    for got, want in zip(rows, expected, strict=True):
        assert _columns(got) == _columns(want), "every column, converted as the ORM converts it"
        assert _columns(got.message) == _columns(want.message)
        sender_domain = got.message.sender_domain
        assert (sender_domain and _columns(sender_domain)) == (want.message.sender_domain
                                                               and _columns(want.message.sender_domain))
    assert {r.message.sender_domain is None for r in rows} == {True, False}, "a message without one too"

    def compiled_again(*args, **kwargs):
        raise AssertionError("rows_of compiled its statement again")

    monkeypatch.setattr(SQLCompiler, "as_sql", compiled_again)
    with django_assert_num_queries(1):  # still one query, and seen where queries are recorded
        assert queue.rows_of("another-run") == []
    assert [r.pk for r in queue.rows_of("run-1")] == [r.pk for r in expected]


def test_a_sweep_delivers_its_first_share_itself_instead_of_through_the_broker(bob, sink, settings,
                                                                                published_tasks):
    """A kick means "deliver now": no broker round trip for the first share, and kicks piled up
    behind a long drain no longer lease rows to tasks that wait behind the other kicks."""
    from delivery import tasks

    settings.QUEUE_DISPATCH_TASKS = 1
    message = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    assert tasks.dispatch_due() == 1
    assert published_tasks == [], "nothing went to the broker"
    assert len(sink.wait_for(1)) == 1 and message.recipients.get().state == State.DELIVERED


def test_the_tasks_a_sweep_sends_for_the_rest_carry_no_rows_so_a_draining_worker_can_take_them(bob, sink,
                                                                                              settings,
                                                                                              published_tasks):
    """Rows leased to a task still waiting in the broker (behind the kicks that piled up while
    every worker drained) were out of reach of the draining workers: the last messages of a
    burst waited up to a second after everything else had gone."""
    from delivery import tasks

    settings.QUEUE_DISPATCH_TASKS, settings.QUEUE_BATCHES_PER_TASK = 2, 1
    settings.QUEUE_DRAIN_SECONDS = 0  # the sweep delivers its own share and stops there
    first = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    second = enqueue("bob@example.org", ["b@other.remote"], MESSAGE)
    assert tasks.dispatch_due() == 1
    [(task, args, expires)] = [(p.task, p.args, p.expires) for p in published_tasks]
    assert (task, args) == ("delivery.deliver", ([],)), "a wake-up for one more worker, with no rows"
    assert expires is not None, "dropped unrun when every worker is busy"
    delivered, waiting = sorted([first.recipients.get(), second.recipients.get()],
                                key=lambda r: r.state != State.DELIVERED)
    assert delivered.state == State.DELIVERED
    assert waiting.state == State.QUEUED and not waiting.lease_owner, "still anyone's to claim"
    assert outbound.deliver_due(5, 1) == 1, "a worker already draining takes it"
    waiting.refresh_from_db()
    assert waiting.state == State.DELIVERED and len(sink.messages) == 2


def test_a_sweep_with_less_than_one_tasks_share_wakes_no_other_worker(bob, sink, settings, published_tasks):
    from delivery import tasks

    settings.QUEUE_DISPATCH_TASKS, settings.QUEUE_BATCHES_PER_TASK = 4, 10
    message = enqueue("bob@example.org", ["a@remote.test", "b@other.remote"], MESSAGE)
    assert tasks.dispatch_due() == 2
    assert published_tasks == []
    assert {r.state for r in message.recipients.all()} == {State.DELIVERED}


def test_a_task_queued_with_leased_rows_before_the_change_still_delivers_them(bob, sink):
    message = enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
    tokens = queue.claim_due()
    from delivery import tasks

    tasks.deliver(tokens)
    assert message.recipients.get().state == State.DELIVERED and len(sink.messages) == 1
