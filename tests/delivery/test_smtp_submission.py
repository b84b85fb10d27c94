"""Submission: an authenticated identity sends only as itself (envelope, From:, Sender:),
relays to remote recipients through the queue, and local recipients must exist."""

from __future__ import annotations

import smtplib

import pytest

from delivery import replies
from delivery.models import MessageLog, QueuedMessage
from delivery.smtp_policy import header_sender_addresses, submission_headers_reply
from mailboxes.models import RelayCredential
from mailboxes.provisioning import create_alias
from tests.smtp_fixtures import client_tls
from tests.support import PASSWORD, eventually


def message(from_header="Bob <bob@example.org>", extra=""):
    return (f"From: {from_header}\r\n{extra}To: friend@remote.test\r\nSubject: hi\r\n\r\nhello\r\n").encode()


def submit(service, sender, recipients, data, user="bob@example.org", password=PASSWORD):
    with smtplib.SMTP_SSL("127.0.0.1", service.submissions, timeout=20, context=client_tls()) as client:
        client.login(user, password)
        return client.sendmail(sender, recipients, data)


def refusal(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {exc.smtp_error.decode()}"


def test_an_authenticated_mailbox_relays_to_a_remote_recipient_through_the_queue(shared_smtp_service, bob):
    assert submit(shared_smtp_service, "bob@example.org", ["friend@remote.test", "bob@example.org"], message()) == {}
    [local_copy] = (bob.maildir / "new").iterdir()
    assert local_copy.read_bytes().endswith(message())
    queued = QueuedMessage.objects.get()
    assert queued.source == QueuedMessage.Source.SUBMISSION and queued.auth_user == "bob@example.org"
    assert [r.address for r in queued.recipients.all()] == ["friend@remote.test"]
    assert bytes(queued.data).endswith(message())
    [log] = eventually(lambda: list(MessageLog.objects.filter(domain=bob.domain)))
    assert (log.direction, log.result, log.auth_user) == ("submission", "accepted", "bob@example.org")


def test_a_spoofed_envelope_sender_is_refused(shared_smtp_service, bob):
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        submit(shared_smtp_service, "boss@example.org", ["friend@remote.test"], message())
    assert refusal(refused.value) == replies.SENDER_NOT_ALLOWED


def test_a_spoofed_from_header_is_refused_even_with_a_good_envelope(shared_smtp_service, bob):
    for from_header in ("boss@example.org", "Bob <boss@example.org>", "bob@example.org, boss@example.org"):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            submit(shared_smtp_service, "bob@example.org", ["friend@remote.test"], message(from_header))
        assert refusal(refused.value) in (replies.FROM_NOT_ALLOWED, replies.FROM_MISSING), from_header
    assert QueuedMessage.objects.count() == 0
    assert eventually(lambda: MessageLog.objects.filter(result="refused").count() == 3)


def test_a_spoofed_sender_header_is_refused(shared_smtp_service, bob):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(shared_smtp_service, "bob@example.org", ["friend@remote.test"],
               message(extra="Sender: boss@example.org\r\n"))
    assert refusal(refused.value) == replies.FROM_NOT_ALLOWED


def test_the_null_sender_is_refused_on_submission(shared_smtp_service, bob):
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        submit(shared_smtp_service, "", ["friend@remote.test"], message())
    assert refusal(refused.value) == replies.NULL_SENDER_NOT_ALLOWED


def test_a_mailbox_sends_as_its_address_in_any_case_and_as_aliases_that_reach_it(shared_smtp_service, bob):
    create_alias("sales@example.org", ["bob@example.org"])
    assert submit(shared_smtp_service, "BOB@EXAMPLE.ORG", ["friend@remote.test"], message("BOB@example.org")) == {}
    assert submit(shared_smtp_service, "sales@example.org", ["friend@remote.test"],
                  message('"Sales" <sales@example.org>')) == {}


def test_an_unknown_local_recipient_is_refused_at_rcpt(shared_smtp_service, bob):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        submit(shared_smtp_service, "bob@example.org", ["nobody@example.org"], message())
    code, text = refused.value.recipients["nobody@example.org"]
    assert f"{code} {text.decode()}" == replies.UNKNOWN_USER


def test_mail_before_auth_is_refused_on_submission(shared_smtp_service, bob):
    with smtplib.SMTP("127.0.0.1", shared_smtp_service.submission, timeout=20) as client:
        client.starttls(context=client_tls())
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("bob@example.org", ["friend@remote.test"], message())
    assert refusal(refused.value) == replies.AUTH_REQUIRED


def test_a_domain_relay_credential_sends_only_as_what_it_lists(shared_smtp_service, bob):
    cred, secret = RelayCredential.issue(domain=bob.domain, label="crm", allowed_senders=["news@example.org"])
    news = message("News <news@example.org>")
    assert submit(shared_smtp_service, "news@example.org", ["friend@remote.test"], news, cred.login, secret) == {}
    with pytest.raises(smtplib.SMTPSenderRefused):
        submit(shared_smtp_service, "bob@example.org", ["friend@remote.test"], message(), cred.login, secret)


def test_from_must_hold_exactly_one_address(bob):
    assert header_sender_addresses(b"From: a@example.org\r\nFrom: b@example.org\r\n\r\n") is None
    assert header_sender_addresses(b"Subject: no from\r\n\r\n") is None
    assert header_sender_addresses(b'From: "Bob, Jr." <bob@example.org>\r\n\r\n') == (["bob@example.org"], [])
    assert submission_headers_reply(b"To: x@remote.test\r\n\r\n", None) == replies.FROM_MISSING


def test_a_client_speaking_plaintext_to_the_implicit_tls_port_is_dropped_and_the_next_is_served(
        shared_smtp_service, bob):
    import socket

    with socket.create_connection(("127.0.0.1", shared_smtp_service.submissions), timeout=20) as plain:
        plain.sendall(b"EHLO client.test\r\n")
        try:
            assert not plain.recv(1024).startswith(b"2")    # the TLS handshake failed: closed
        except ConnectionResetError:
            pass
    assert submit(shared_smtp_service, "bob@example.org", ["friend@remote.test"], message()) == {}
