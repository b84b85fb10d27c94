"""Forwarding with SRS and vacation auto-replies (RFC 3834), end to end through store_message.

Inbound mail is handed to store_message as the SMTP service does at the end of DATA; what leaves
goes through the queue to a real sink found through real DNS.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery import autoreply, srs
from delivery.models import AutoReplySent, QueuedMessage, QueuedRecipient
from delivery.storage import store_message
from mailboxes.directory import resolve
from mailboxes.provisioning import create_alias
from tests.delivery.outbound_peers import Sink
from tests.delivery.test_outbound_delivery import run_queue

INBOUND = (b"From: Carol <carol@remote.test>\r\nTo: bob@example.org\r\nSubject: lunch?\r\n"
           b"Message-ID: <lunch-1@remote.test>\r\n\r\nShall we?\r\n")


@pytest.fixture
def sink(dns_server, settings):
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    with Sink() as s:
        settings.SMTP_OUTBOUND_PORT = s.port
        yield s


def receive(sender: str, rcpt: str, data: bytes = INBOUND):
    resolution = resolve(rcpt)
    assert resolution.ok, resolution.reason
    return store_message(sender, resolution.mailboxes, resolution.remote, data,
                         source=QueuedMessage.Source.INBOUND)


@pytest.fixture
def on_vacation(bob):
    bob.autoreply_enabled = True
    bob.autoreply_subject = "Out of office"
    bob.autoreply_body = "Back on Monday."
    bob.save()
    return bob


def test_an_alias_to_a_remote_address_forwards_with_an_srs_envelope_sender(example_org, sink, settings):
    create_alias("team@example.org", ["dana@remote.test"])
    stored = receive("carol@elsewhere.test", "team@example.org")
    assert stored.queued.sender.startswith("SRS0=") and stored.queued.sender.endswith("@mail.mailhost.test")
    run_queue()
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["dana@remote.test"]
    assert received.mail_from == stored.queued.sender
    assert received.data == INBOUND, "forwarded bytes are untouched, so the original DKIM still verifies"
    assert srs.reverse(received.mail_from) == "carol@elsewhere.test"


def test_a_bounce_of_forwarded_mail_goes_to_the_original_sender(bob, sink, settings):
    create_alias("team@example.org", ["reject@remote.test"])
    receive("bob@example.org", "team@example.org")
    run_queue()
    assert QueuedRecipient.objects.get(address="reject@remote.test").dsn_sent
    [dsn] = list((bob.maildir / "new").iterdir())
    assert b"Final-Recipient: rfc822; reject@remote.test" in dsn.read_bytes()


def test_srs_addresses_cannot_be_forged_or_reused_forever(settings):
    address = srs.forward("carol@elsewhere.test")
    assert srs.reverse(address) == "carol@elsewhere.test"
    local, _, domain = address.partition("@")
    forged = local.replace("elsewhere.test", "victim.test") + "@" + domain
    assert srs.reverse(forged) is None
    assert srs.forward("") == "", "the null sender stays null"
    assert srs.reverse("carol@elsewhere.test") is None


def test_an_srs_address_from_another_forwarder_becomes_srs1_and_reverses_to_it():
    hop = "SRS0=abcd=XY=origin.test=carol@forwarder.test"
    address = srs.forward(hop)
    assert address.startswith("SRS1=")
    assert srs.reverse(address) == "SRS0=abcd=XY=origin.test=carol@forwarder.test"


def test_a_mailbox_on_vacation_replies_once_to_a_remote_sender(on_vacation, sink):
    receive("carol@remote.test", "bob@example.org")
    receive("carol@remote.test", "bob@example.org")
    run_queue()
    [reply] = sink.wait_for(1)
    assert reply.mail_from == "<>" and reply.rcpt_tos == ["carol@remote.test"]
    text = reply.data.decode()
    assert "Auto-Submitted: auto-replied" in text and "In-Reply-To: <lunch-1@remote.test>" in text
    assert "Subject: Out of office" in text and "Back on Monday." in text
    assert "DKIM-Signature:" in text, "the reply is signed as example.org mail"
    assert QueuedMessage.objects.filter(source=QueuedMessage.Source.AUTOREPLY).count() == 1
    assert len(list((on_vacation.maildir / "new").iterdir())) == 2, "the mail itself is delivered"


def test_the_reply_comes_again_after_the_interval(on_vacation, sink):
    receive("carol@remote.test", "bob@example.org")
    AutoReplySent.objects.update(sent_at=timezone.now() - dt.timedelta(days=on_vacation.autoreply_interval_days + 1))
    receive("carol@remote.test", "bob@example.org")
    assert QueuedMessage.objects.filter(source=QueuedMessage.Source.AUTOREPLY).count() == 2


@pytest.mark.parametrize("sender, headers", [
    ("", b""),
    ("carol@remote.test", b"Auto-Submitted: auto-generated\r\n"),
    ("carol@remote.test", b"Precedence: bulk\r\n"),
    ("carol@remote.test", b"List-Id: <lunch.remote.test>\r\n"),
    ("mailer-daemon@remote.test", b""),
    ("owner-lunch@remote.test", b""),
])
def test_no_reply_goes_to_null_senders_lists_bulk_or_automatic_mail(on_vacation, sender, headers):
    receive(sender, "bob@example.org", headers + INBOUND)
    assert not QueuedMessage.objects.filter(source=QueuedMessage.Source.AUTOREPLY).exists()


def test_auto_submitted_no_is_a_person_and_gets_a_reply(on_vacation):
    receive("carol@remote.test", "bob@example.org", b"Auto-Submitted: no\r\n" + INBOUND)
    assert QueuedMessage.objects.filter(source=QueuedMessage.Source.AUTOREPLY).count() == 1


def test_replies_only_between_the_start_and_end_dates(on_vacation):
    on_vacation.autoreply_start = timezone.now() + dt.timedelta(days=1)
    on_vacation.save()
    assert not autoreply.is_active(on_vacation)
    on_vacation.autoreply_start = timezone.now() - dt.timedelta(days=2)
    on_vacation.autoreply_end = timezone.now() - dt.timedelta(days=1)
    on_vacation.save()
    assert not autoreply.is_active(on_vacation)
    receive("carol@remote.test", "bob@example.org")
    assert not QueuedMessage.objects.filter(source=QueuedMessage.Source.AUTOREPLY).exists()
    on_vacation.autoreply_end = timezone.now() + dt.timedelta(days=1)
    on_vacation.save()
    assert autoreply.is_active(on_vacation)


def test_a_local_sender_gets_the_reply_in_their_maildir(on_vacation, example_org):
    from mailboxes.provisioning import create_mailbox
    from tests.support import PASSWORD

    erin = create_mailbox("erin@example.org", PASSWORD)
    receive("erin@example.org", "bob@example.org")
    [reply] = list((erin.maildir / "new").iterdir())
    assert b"Auto-Submitted: auto-replied" in reply.read_bytes()
