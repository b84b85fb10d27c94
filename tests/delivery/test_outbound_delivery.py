"""Delivering queued mail to a real SMTP peer found through real DNS.

The peer is an aiosmtpd sink on 127.0.0.2; nsd on loopback publishes the MX records; the
code under test is the same the Celery task runs (claim, take over, deliver).
"""

from __future__ import annotations

import datetime as dt
import email

import pytest
from django.utils import timezone

from delivery import outbound, queue
from delivery.models import MessageLog, QueuedRecipient, Suppression
from delivery.queue import enqueue
from tests.delivery.outbound_peers import Sink, broken_tls_context, self_signed_context

State = QueuedRecipient.State
MESSAGE = b"From: Bob <bob@example.org>\r\nTo: someone@remote.test\r\nSubject: hello\r\n\r\nHi there.\r\n"


@pytest.fixture
def remote_mx(dns_server, settings):
    """remote.test and other.remote have MX records pointing at 127.0.0.2."""
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    dns_server.zone("other.remote", "@ IN MX 10 mx.remote.test.")
    return dns_server


@pytest.fixture
def sink(remote_mx, settings, tmp_path):
    with Sink(tls=self_signed_context(tmp_path)) as s:
        settings.SMTP_OUTBOUND_PORT = s.port
        yield s


def run_queue(now=None) -> None:
    """What the beat task and the deliver tasks do, in this process."""
    for token in queue.claim_due(now):
        run, rows = queue.take_over(token)
        outbound.deliver_batch(run, rows)


def test_a_message_is_delivered_over_starttls_and_the_tls_version_is_recorded(bob, sink):
    message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    run_queue()
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["someone@remote.test"] and received.tls
    assert received.mail_from == "bob@example.org"
    rcpt = message.recipients.get()
    assert rcpt.state == State.DELIVERED and rcpt.tls_version.startswith("TLSv1.")
    assert rcpt.last_reply.startswith("250")
    assert MessageLog.objects.filter(queue_id=message.queue_id, result="delivered").exists()


def test_a_peer_without_starttls_still_gets_the_mail_in_plaintext(bob, remote_mx, settings):
    with Sink() as plain:
        settings.SMTP_OUTBOUND_PORT = plain.port
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        assert len(plain.wait_for(1)) == 1 and not plain.messages[0].tls
    assert message.recipients.get().tls_version == ""


def test_several_messages_and_recipients_for_one_destination_share_one_connection(bob, sink):
    for n in range(3):
        enqueue("bob@example.org", [f"a{n}@remote.test", f"b{n}@remote.test"], MESSAGE)
    run_queue()
    received = sink.wait_for(3)
    assert len(received) == 3 and sink.handler.sessions == 1
    assert sorted(len(r.rcpt_tos) for r in received) == [2, 2, 2]


def test_a_greylisting_peer_is_retried_after_five_minutes_and_then_accepts(bob, sink):
    message = enqueue("bob@example.org", ["grey@remote.test"], MESSAGE)
    run_queue()
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and rcpt.last_reply.startswith("451 4.7.1")
    assert dt.timedelta(seconds=290) < rcpt.next_attempt_at - timezone.now() <= dt.timedelta(seconds=300)
    run_queue()
    assert sink.messages == [], "nothing is tried before the retry time"
    run_queue(now=timezone.now() + dt.timedelta(minutes=6))
    assert len(sink.wait_for(1)) == 1
    rcpt.refresh_from_db()
    assert rcpt.state == State.DELIVERED and rcpt.attempts == 2


def test_the_retry_schedule_backs_off_to_every_four_hours():
    assert [queue.retry_delay(n) for n in range(1, 9)] == [300, 600, 1200, 2400, 3600, 7200, 14400, 14400]


def test_a_550_bounces_with_a_well_formed_dsn_in_the_senders_maildir(bob, sink, mail_root):
    message = enqueue("bob@example.org", ["reject-me@remote.test", "ok@remote.test"], MESSAGE)
    run_queue()
    states = dict(message.recipients.values_list("address", "state"))
    assert states == {"reject-me@remote.test": State.BOUNCED, "ok@remote.test": State.DELIVERED}
    [path] = list((bob.maildir / "new").iterdir())
    dsn = email.message_from_bytes(path.read_bytes())
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied" and dsn["To"] == "bob@example.org"
    human, status, headers = dsn.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    fields = status.as_string()
    assert "Final-Recipient: rfc822; reject-me@remote.test" in fields
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user here" in fields
    assert "Reporting-MTA: dns; mail.mailhost.test" in fields
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: hello" in headers.get_payload()
    assert "ok@remote.test" not in human.get_payload(decode=True).decode()


def test_a_dsn_that_cannot_be_delivered_makes_no_further_dsn(bob, sink):
    enqueue("", ["reject@remote.test"], MESSAGE, source="dsn")
    run_queue()
    assert QueuedRecipient.objects.get().state == State.BOUNCED
    assert not (bob.maildir / "new").exists() or not list((bob.maildir / "new").iterdir())
    assert QueuedRecipient.objects.count() == 1, "no DSN was queued for the null sender"


def test_a_hard_bounced_recipient_is_suppressed_for_the_sending_domain(bob, sink, example_org):
    enqueue("bob@example.org", ["reject@remote.test"], MESSAGE)
    run_queue()
    suppression = Suppression.objects.get(domain=example_org, address="reject@remote.test")
    assert suppression.expires_at > timezone.now() + dt.timedelta(days=29)
    attempts_before = len(sink.handler.rcpt_attempts)
    again = enqueue("bob@example.org", ["reject@remote.test"], MESSAGE)
    run_queue()
    rcpt = again.recipients.get()
    assert rcpt.state == State.BOUNCED and "suppressed" in rcpt.last_reply
    assert len(sink.handler.rcpt_attempts) == attempts_before, "the peer was not asked again"
    suppression.delete()
    third = enqueue("bob@example.org", ["reject@remote.test"], MESSAGE)
    run_queue()
    assert len(sink.handler.rcpt_attempts) == attempts_before + 1
    assert third.recipients.get().last_reply.startswith("550 5.1.1")


def test_a_batch_claimed_twice_is_delivered_once(bob, sink):
    enqueue("bob@example.org", ["once@remote.test"], MESSAGE)
    [token] = queue.claim_due()
    assert queue.claim_due() == [], "leased rows are not claimed again"
    run, rows = queue.take_over(token)
    assert queue.take_over(token)[1] == [], "a second run of the same task gets nothing"
    outbound.deliver_batch(run, rows)
    outbound.deliver_batch(run, rows)
    run_queue(now=timezone.now() + dt.timedelta(hours=1))
    assert len(sink.wait_for(1)) == 1
    import time

    time.sleep(0.3)
    assert len(sink.messages) == 1


def test_an_expired_lease_is_claimed_again(bob, sink, settings):
    enqueue("bob@example.org", ["late@remote.test"], MESSAGE)
    [token] = queue.claim_due()
    queue.take_over(token)   # a worker that took the batch and died
    assert queue.claim_due() == []
    run_queue(now=timezone.now() + dt.timedelta(seconds=settings.QUEUE_LEASE_SECONDS + 1))
    assert len(sink.wait_for(1)) == 1


def test_a_destination_gets_at_most_its_concurrency_limit_of_batches(bob, sink, settings):
    settings.QUEUE_BATCH_SIZE = 1
    settings.QUEUE_DESTINATION_CONCURRENCY = 2
    for n in range(5):
        enqueue("bob@example.org", [f"r{n}@remote.test"], MESSAGE)
    enqueue("bob@example.org", ["x@other.remote"], MESSAGE)
    tokens = queue.claim_due()
    domains = [QueuedRecipient.objects.filter(lease_owner=t).get().domain for t in tokens]
    assert sorted(domains) == ["other.remote", "remote.test", "remote.test"]


def test_mail_that_stays_undeliverable_past_the_lifetime_expires_with_a_dsn(bob, sink, remote_mx, settings):
    settings.SMTP_OUTBOUND_PORT = 1  # nothing listens: connection refused
    message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    run_queue()
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and rcpt.last_reply.startswith("451 4.4.1")
    message.created_at = timezone.now() - dt.timedelta(seconds=settings.QUEUE_LIFETIME + 1)
    message.save()
    run_queue(now=timezone.now() + dt.timedelta(hours=1))
    rcpt.refresh_from_db()
    assert rcpt.state == State.EXPIRED and rcpt.dsn_sent
    [path] = list((bob.maildir / "new").iterdir())
    assert b"Action: failed" in path.read_bytes()


def test_a_delay_warning_goes_out_once_after_the_warning_time(bob, remote_mx, settings):
    settings.SMTP_OUTBOUND_PORT = 1
    message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    message.created_at = timezone.now() - dt.timedelta(seconds=settings.QUEUE_DELAY_WARNING + 1)
    message.save()
    run_queue()
    run_queue(now=timezone.now() + dt.timedelta(hours=1))
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and rcpt.delay_warned and rcpt.attempts == 2
    [path] = list((bob.maildir / "new").iterdir())
    data = path.read_bytes()
    assert b"Action: delayed" in data and b"Will-Retry-Until:" in data and b"Status: 4.4.1" in data


def test_only_a_live_suppression_for_the_sending_domain_bounces_a_recipient(bob, sink, example_org, other_test):
    now = timezone.now()
    Suppression.objects.create(domain=example_org, address="lapsed@remote.test", reason="550 5.1.1",
                               created_at=now - dt.timedelta(days=31), expires_at=now - dt.timedelta(days=1))
    Suppression.objects.create(domain=other_test, address="elsewhere@remote.test", reason="550 5.1.1",
                               created_at=now, expires_at=now + dt.timedelta(days=30))
    Suppression.objects.create(domain=example_org, address="gone@remote.test", reason="550 5.1.1",
                               created_at=now, expires_at=now + dt.timedelta(days=30))
    message = enqueue("bob@example.org", ["lapsed@remote.test", "elsewhere@remote.test", "Gone@Remote.test"],
                      MESSAGE)
    run_queue()
    states = {r.address: r.state for r in message.recipients.all()}
    assert states == {"lapsed@remote.test": State.DELIVERED, "elsewhere@remote.test": State.DELIVERED,
                      "Gone@Remote.test": State.BOUNCED}


def test_suppressions_are_visible_and_removable_in_the_admin(client, superadmin, example_org):
    suppression = Suppression.objects.create(domain=example_org, address="gone@remote.test",
                                             reason="550 5.1.1 No such user here",
                                             expires_at=timezone.now() + dt.timedelta(days=30))
    client.force_login(superadmin)
    listing = client.get("/admin/delivery/suppression/")
    assert listing.status_code == 200 and b"gone@remote.test" in listing.content
    response = client.post(f"/admin/delivery/suppression/{suppression.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Suppression.objects.exists()


def test_a_tls_handshake_that_fails_is_retried_at_once_in_plaintext_like_postfix(bob, remote_mx, settings,
                                                                                 tmp_path):
    with Sink(tls=broken_tls_context(tmp_path)) as old_appliance:
        settings.SMTP_OUTBOUND_PORT = old_appliance.port
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        [received] = old_appliance.wait_for(1)
    assert not received.tls
    rcpt = message.recipients.get()
    assert rcpt.state == State.DELIVERED and rcpt.attempts == 1 and rcpt.tls_version == ""


def test_a_refused_starttls_goes_on_in_plaintext_in_the_same_session(bob, remote_mx, settings, tmp_path):
    with Sink(tls=self_signed_context(tmp_path), starttls_reply="454 4.7.0 TLS not available") as peer:
        settings.SMTP_OUTBOUND_PORT = peer.port
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        [received] = peer.wait_for(1)
    assert not received.tls
    rcpt = message.recipients.get()
    assert rcpt.state == State.DELIVERED and rcpt.tls_version == ""


def test_mail_from_declares_the_size_and_an_8bit_body_to_a_peer_that_announces_them(bob, sink):
    body = "From: Bob <bob@example.org>\r\nTo: someone@remote.test\r\nSubject: olá\r\n\r\nçà\r\n".encode()
    enqueue("bob@example.org", ["someone@remote.test"], body)
    enqueue("bob@example.org", ["other@remote.test"], MESSAGE)
    run_queue()
    eight_bit, seven_bit = sorted(sink.wait_for(2), key=lambda m: m.rcpt_tos)[::-1]
    assert f"SIZE={len(eight_bit.data)}" in eight_bit.mail_options and "BODY=8BITMIME" in eight_bit.mail_options
    assert f"SIZE={len(seven_bit.data)}" in seven_bit.mail_options and "BODY=8BITMIME" not in seven_bit.mail_options


def test_a_message_over_the_peers_announced_size_bounces_at_once_without_being_sent(bob, remote_mx, settings,
                                                                                   mail_root):
    with Sink(size_limit=2000) as small:
        settings.SMTP_OUTBOUND_PORT = small.port
        big = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE + b"x" * 3000 + b"\r\n")
        fits = enqueue("bob@example.org", ["other@remote.test"], MESSAGE)
        run_queue()
        assert [m.rcpt_tos for m in small.wait_for(1)] == [["other@remote.test"]]
        assert small.handler.rcpt_attempts == ["other@remote.test"], "the big one never got past MAIL FROM"
    rcpt = big.recipients.get()
    assert rcpt.state == State.BOUNCED and rcpt.last_reply.startswith("552 5.3.4") and "2000" in rcpt.last_reply
    assert fits.recipients.get().state == State.DELIVERED
    [path] = list((bob.maildir / "new").iterdir())
    assert "Status: 5.3.4" in path.read_text(), "the sender hears why"


def test_an_internationalized_address_goes_out_with_smtputf8_to_a_peer_that_offers_it(bob, remote_mx, settings):
    with Sink(smtputf8=True) as peer:
        settings.SMTP_OUTBOUND_PORT = peer.port
        message = enqueue("bob@example.org", ["josé@remote.test"], MESSAGE)
        run_queue()
        [received] = peer.wait_for(1)
    assert received.rcpt_tos == ["josé@remote.test"] and "SMTPUTF8" in received.mail_options
    assert message.recipients.get().state == State.DELIVERED


def test_an_internationalized_address_bounces_at_a_peer_without_smtputf8_and_the_batch_goes_on(bob, sink,
                                                                                            mail_root):
    stuck = enqueue("bob@example.org", ["josé@remote.test"], MESSAGE)
    fine = enqueue("bob@example.org", ["jose@remote.test"], MESSAGE)
    run_queue()
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["jose@remote.test"]]
    rcpt = stuck.recipients.get()
    assert rcpt.state == State.BOUNCED and rcpt.last_reply.startswith("553 5.6.7") and "SMTPUTF8" in rcpt.last_reply
    assert fine.recipients.get().state == State.DELIVERED
    # The DSN names the address in RFC 6533's ASCII form, in a report any DSN reader parses.
    [path] = list((bob.maildir / "new").iterdir())
    status = email.message_from_bytes(path.read_bytes()).get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    assert "Final-Recipient: utf-8; jos\\x{E9}@remote.test" in status.as_string()


def test_a_unicode_domain_with_an_ascii_local_part_goes_out_as_its_a_label_without_smtputf8(bob, dns_server,
                                                                                           settings, tmp_path):
    dns_server.zone("xn--bcher-kva.test", "@ IN MX 10 mx.xn--bcher-kva.test.", "mx IN A 127.0.0.2")
    with Sink(tls=self_signed_context(tmp_path)) as peer:
        settings.SMTP_OUTBOUND_PORT = peer.port
        message = enqueue("bob@example.org", ["anna@bücher.test"], MESSAGE)
        run_queue()
        [received] = peer.wait_for(1)
    assert received.rcpt_tos == ["anna@xn--bcher-kva.test"] and "SMTPUTF8" not in received.mail_options
    assert message.recipients.get().state == State.DELIVERED


def test_a_message_to_many_recipients_at_one_domain_goes_in_transactions_of_at_most_fifty(bob, sink):
    recipients = [f"user{n}@remote.test" for n in range(120)]
    message = enqueue("bob@example.org", recipients, MESSAGE)
    run_queue()
    sink.wait_for(3)
    assert sink.handler.transactions == [50, 50, 20] and sink.handler.sessions == 1
    assert set(message.recipients.values_list("state", flat=True)) == {State.DELIVERED}


def test_a_peers_lower_recipient_limit_sends_the_rest_in_a_new_transaction_at_once(bob, sink, settings):
    sink.handler.rcpt_limit = 20
    message = enqueue("bob@example.org", [f"user{n}@remote.test" for n in range(45)], MESSAGE)
    run_queue()
    sink.wait_for(3)
    assert sink.handler.transactions == [20, 20, 5]
    assert set(message.recipients.values_list("state", flat=True)) == {State.DELIVERED}
    assert set(message.recipients.values_list("attempts", flat=True)) == {1}


def test_a_452_for_a_recipient_alone_in_its_transaction_defers_it(bob, sink):
    message = enqueue("bob@example.org", ["ok@remote.test", "full@remote.test"], MESSAGE)
    run_queue()
    states = dict(message.recipients.values_list("address", "state"))
    assert states == {"ok@remote.test": State.DELIVERED, "full@remote.test": State.DEFERRED}
    assert sink.handler.rcpt_attempts == ["ok@remote.test", "full@remote.test", "full@remote.test"]
    assert message.recipients.get(address="full@remote.test").last_reply == "452 4.2.2 Mailbox full"


def test_a_refused_data_command_answers_for_the_accepted_recipients_only(bob, remote_mx, settings, mail_root):
    with Sink(data_reply="554 5.7.1 Message refused by policy") as peer:
        settings.SMTP_OUTBOUND_PORT = peer.port
        message = enqueue("bob@example.org", ["reject-me@remote.test", "a@remote.test"], MESSAGE)
        other = enqueue("bob@example.org", ["b@remote.test"], MESSAGE)
        run_queue()
    replies = dict(message.recipients.values_list("address", "last_reply"))
    assert replies == {"reject-me@remote.test": "550 5.1.1 No such user here",
                       "a@remote.test": "554 5.7.1 Message refused by policy"}
    rcpt = other.recipients.get()
    assert rcpt.state == State.BOUNCED and rcpt.last_reply == "554 5.7.1 Message refused by policy", \
        "the next message on the connection got its own answer after RSET"


def test_a_local_error_on_one_message_defers_it_and_the_rest_still_goes_out(bob, sink, monkeypatch):
    """A bug of ours (injected here: the one fault no real peer can cause) must not leave the
    message leased and retried for ever, nor hold back the mail behind it."""
    real_send = outbound.Connection.send

    def send(self, sender, rcpts, data):
        if any(r.address.startswith("poison") for r in rcpts):
            raise RuntimeError("injected fault")
        return real_send(self, sender, rcpts, data)

    monkeypatch.setattr(outbound.Connection, "send", send)
    poison = enqueue("bob@example.org", ["poison@remote.test"], MESSAGE)
    after = enqueue("bob@example.org", ["after@remote.test"], MESSAGE)
    run_queue()
    rcpt = poison.recipients.get()
    assert rcpt.state == State.DEFERRED and rcpt.attempts == 1 and rcpt.lease_owner == ""
    assert rcpt.last_reply.startswith("451 4.3.0 Local error") and "injected fault" in rcpt.last_reply
    assert after.recipients.get().state == State.DELIVERED
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["after@remote.test"]]


def test_queued_mail_of_a_suspended_domain_stays_until_the_domain_is_resumed(bob, sink, example_org):
    held = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    example_org.active = False
    example_org.save(update_fields=["active"])
    run_queue()
    rcpt = held.recipients.get()
    assert rcpt.state == State.DEFERRED and "example.org is suspended" in rcpt.last_reply
    assert sink.handler.rcpt_attempts == [], "nothing of it reached the peer"
    example_org.active = True
    example_org.save(update_fields=["active"])
    queue.retry_now(held.queue_id)
    run_queue()
    assert held.recipients.get().state == State.DELIVERED and len(sink.wait_for(1)) == 1
