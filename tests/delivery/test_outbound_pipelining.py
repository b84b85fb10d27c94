"""PIPELINING (RFC 2920) towards a peer that offers it, as Postfix's client does.

The peer is the aiosmtpd sink of outbound_peers offering PIPELINING; it notes for every MAIL
whether the commands up to DATA had already arrived with it. Each case of the unpipelined
conversation (a refused MAIL, RCPT or DATA, a recipient limit) must end the same way.
"""

from __future__ import annotations

import smtplib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery import outbound
from delivery.models import QueuedRecipient
from delivery.queue import enqueue
from tests.delivery.outbound_peers import Sink, self_signed_context
from tests.delivery.test_outbound_delivery import MESSAGE, run_queue

State = QueuedRecipient.State


@pytest.fixture
def remote_mx(dns_server):
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    return dns_server


@pytest.fixture
def peer(remote_mx, settings, tmp_path):
    with Sink(tls=self_signed_context(tmp_path), pipelining=True) as s:
        settings.SMTP_OUTBOUND_PORT = s.port
        yield s


def states(message) -> dict[str, tuple[str, str]]:
    return {r.address: (r.state, r.last_reply) for r in message.recipients.all()}


def test_mail_rcpt_and_data_reach_a_pipelining_peer_together_and_the_message_arrives_intact(bob, peer):
    dotted = MESSAGE + b".a line starting with a dot\r\n..and one with two\r\n.\r\nend\r\n"
    message = enqueue("bob@example.org", ["a@remote.test", "b@remote.test"], dotted)
    run_queue()
    [received] = peer.wait_for(1)
    assert peer.handler.pipelined == [True]
    assert received.rcpt_tos == ["a@remote.test", "b@remote.test"] and received.tls
    assert received.data == message.data, "dot-stuffing undone by the peer gives back the exact bytes"
    assert {state for state, _ in states(message).values()} == {State.DELIVERED}


def test_a_peer_without_pipelining_gets_one_command_at_a_time(bob, remote_mx, settings):
    with Sink() as plain:
        settings.SMTP_OUTBOUND_PORT = plain.port
        enqueue("bob@example.org", ["a@remote.test"], MESSAGE)
        run_queue()
        plain.wait_for(1)
    assert plain.handler.pipelined == [False]


def test_several_messages_are_pipelined_one_after_another_on_one_connection(bob, peer):
    messages = [enqueue("bob@example.org", [f"user{n}@remote.test"], MESSAGE) for n in range(3)]
    run_queue()
    assert len(peer.wait_for(3)) == 3 and peer.handler.sessions == 1
    assert peer.handler.pipelined == [True, True, True]
    assert all(m.recipients.get().state == State.DELIVERED for m in messages)


def test_a_refused_recipient_among_pipelined_ones_bounces_alone(bob, peer):
    message = enqueue("bob@example.org", ["a@remote.test", "reject-me@remote.test", "grey@remote.test",
                                          "b@remote.test"], MESSAGE)
    run_queue()
    [received] = peer.wait_for(1)
    assert received.rcpt_tos == ["a@remote.test", "b@remote.test"]
    found = states(message)
    assert found["reject-me@remote.test"] == (State.BOUNCED, "550 5.1.1 No such user here")
    assert found["grey@remote.test"] == (State.DEFERRED, "451 4.7.1 Greylisted, try again later")
    assert found["a@remote.test"][0] == found["b@remote.test"][0] == State.DELIVERED


def test_a_refused_sender_answers_for_every_recipient_and_the_next_message_still_goes(bob, peer, example_org):
    blocked = enqueue("blocked@example.org", ["a@remote.test", "b@remote.test"], MESSAGE)
    fine = enqueue("bob@example.org", ["c@remote.test"], MESSAGE)
    run_queue()
    assert [m.rcpt_tos for m in peer.wait_for(1)] == [["c@remote.test"]]
    assert set(states(blocked).values()) == {(State.BOUNCED, "550 5.7.1 Sender blocked")}
    assert fine.recipients.get().state == State.DELIVERED
    assert peer.handler.rcpt_attempts == ["c@remote.test"], "the peer took no RCPT after refusing MAIL"


def test_when_every_recipient_is_refused_no_message_is_sent_and_the_session_goes_on(bob, peer):
    refused = enqueue("bob@example.org", ["reject-a@remote.test", "reject-b@remote.test"], MESSAGE)
    fine = enqueue("bob@example.org", ["c@remote.test"], MESSAGE)
    run_queue()
    assert [m.rcpt_tos for m in peer.wait_for(1)] == [["c@remote.test"]]
    assert {state for state, _ in states(refused).values()} == {State.BOUNCED}
    assert fine.recipients.get().state == State.DELIVERED and peer.handler.sessions == 1


def test_a_refused_data_command_answers_for_the_accepted_recipients_only(bob, remote_mx, settings):
    with Sink(pipelining=True, data_reply="554 5.7.1 Message refused by policy") as refusing:
        settings.SMTP_OUTBOUND_PORT = refusing.port
        message = enqueue("bob@example.org", ["reject-me@remote.test", "a@remote.test"], MESSAGE)
        other = enqueue("bob@example.org", ["b@remote.test"], MESSAGE)
        run_queue()
    assert states(message) == {"reject-me@remote.test": (State.BOUNCED, "550 5.1.1 No such user here"),
                               "a@remote.test": (State.BOUNCED, "554 5.7.1 Message refused by policy")}
    assert states(other) == {"b@remote.test": (State.BOUNCED, "554 5.7.1 Message refused by policy")}


def test_a_peers_recipient_limit_sends_the_rest_in_a_new_transaction_at_once(bob, peer):
    peer.handler.rcpt_limit = 20
    message = enqueue("bob@example.org", [f"user{n}@remote.test" for n in range(45)], MESSAGE)
    run_queue()
    peer.wait_for(3)
    assert peer.handler.transactions == [20, 20, 5]
    assert set(message.recipients.values_list("state", "attempts")) == {(State.DELIVERED, 1)}


def test_a_452_for_a_recipient_alone_in_its_transaction_defers_it(bob, peer):
    message = enqueue("bob@example.org", ["ok@remote.test", "full@remote.test"], MESSAGE)
    run_queue()
    assert states(message) == {"ok@remote.test": (State.DELIVERED, "250 2.0.0 Ok: queued"),
                               "full@remote.test": (State.DEFERRED, "452 4.2.2 Mailbox full")}


def test_an_internationalized_address_is_pipelined_with_smtputf8(bob, remote_mx, settings):
    with Sink(pipelining=True, smtputf8=True) as utf8:
        settings.SMTP_OUTBOUND_PORT = utf8.port
        message = enqueue("bob@example.org", ["josé@remote.test"], MESSAGE)
        run_queue()
        [received] = utf8.wait_for(1)
    assert received.rcpt_tos == ["josé@remote.test"] and "SMTPUTF8" in received.mail_options
    assert utf8.handler.pipelined == [True] and message.recipients.get().state == State.DELIVERED


@given(st.binary(max_size=300) | st.lists(st.sampled_from([b".", b"a", b"\r\n", b"\n", b"\r", b" "]),
                                           max_size=40).map(b"".join))
def test_dot_stuffing_is_what_smtplib_sends(data):
    # smtplib.SMTP.data's body: its own quoting, a CRLF at the end if missing, then the dot.
    quoted = smtplib._quote_periods(data)
    expected = quoted + (b"" if quoted[-2:] == b"\r\n" else b"\r\n") + b".\r\n"
    assert outbound.dot_stuffed(data) == expected
