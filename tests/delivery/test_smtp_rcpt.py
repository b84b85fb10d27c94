"""Inbound RCPT over a real socket: hosted addresses are delivered, nothing else is relayed."""

from __future__ import annotations

import smtplib

import pytest

from delivery import replies
from delivery.models import MessageLog, QueuedRecipient
from delivery.smtp_policy import rcpt_decision
from domains.models import DomainAlias
from mailboxes.provisioning import create_alias, create_mailbox
from tests.smtp_fixtures import RawSession
from tests.support import eventually

MESSAGE = b"From: someone@elsewhere.test\r\nSubject: hello\r\n\r\nbody\r\n"


def maildir_messages(mailbox) -> list[bytes]:
    new = mailbox.maildir / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.exists() else []


def send(service, recipients, message=MESSAGE, sender="someone@elsewhere.test"):
    with smtplib.SMTP("127.0.0.1", service.inbound, timeout=20) as client:
        return client.sendmail(sender, recipients, message)


def test_it_delivers_to_a_mailbox_before_answering_250(shared_smtp_service, bob):
    assert send(shared_smtp_service, ["bob@example.org"]) == {}
    [stored] = maildir_messages(bob)
    assert stored.endswith(MESSAGE)
    assert stored.startswith(b"Received: from ")
    [row] = eventually(lambda: list(MessageLog.objects.filter(domain=bob.domain)))
    assert (row.direction, row.result, row.recipients) == ("inbound", "accepted", "bob@example.org")
    assert f'"queue_id": "{row.queue_id}", "listener": "inbound"' in shared_smtp_service.log()


def test_it_delivers_to_an_alias_a_catch_all_and_a_domain_alias(shared_smtp_service, bob):
    create_alias("team@example.org", ["bob@example.org"])
    create_alias("@example.org", ["bob@example.org"])
    DomainAlias.objects.create(name="example.net", target=bob.domain)
    for rcpt in ("team@example.org", "anything@example.org", "bob@example.net", "BOB+tag@Example.Org"):
        assert send(shared_smtp_service, [rcpt]) == {}, rcpt
    assert len(maildir_messages(bob)) == 4


def test_an_alias_with_a_remote_destination_queues_a_row(shared_smtp_service, bob):
    create_alias("team@example.org", ["bob@example.org", "friend@remote.test"])
    send(shared_smtp_service, ["team@example.org"])
    assert len(maildir_messages(bob)) == 1
    assert QueuedRecipient.objects.get().address == "friend@remote.test"


def test_it_refuses_an_unknown_user_with_5_1_1_and_logs_it_for_the_domain(shared_smtp_service, bob):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(shared_smtp_service, ["nobody@example.org"])
    code, text = refused.value.recipients["nobody@example.org"]
    assert f"{code} {text.decode()}" == replies.UNKNOWN_USER
    [row] = eventually(lambda: list(MessageLog.objects.filter(domain=bob.domain)))
    assert row.result == "refused" and row.recipients == "nobody@example.org"


def test_it_refuses_a_disabled_mailbox_with_5_2_1(shared_smtp_service, bob):
    bob.active = False
    bob.save()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(shared_smtp_service, ["bob@example.org"])
    assert refused.value.recipients["bob@example.org"][0] == 550
    assert b"5.2.1" in refused.value.recipients["bob@example.org"][1]


def test_a_full_mailbox_gets_a_temporary_4_2_2(shared_smtp_service, example_org):
    full = create_mailbox("full@example.org", "correct horse battery", quota=10)
    full.used_bytes = 11
    full.save()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(shared_smtp_service, ["full@example.org"])
    code, text = refused.value.recipients["full@example.org"]
    assert f"{code} {text.decode()}" == replies.MAILBOX_FULL


def test_a_message_that_would_overflow_the_quota_gets_4_2_2_at_data(shared_smtp_service, example_org):
    nearly = create_mailbox("nearly@example.org", "correct horse battery", quota=1000)
    nearly.used_bytes = 900
    nearly.save()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(shared_smtp_service, ["nearly@example.org"], MESSAGE + b"x" * 500 + b"\r\n")
    assert f"{refused.value.smtp_code} {refused.value.smtp_error.decode()}" == replies.MAILBOX_FULL
    assert maildir_messages(nearly) == []


RELAY_TRICKS = [
    "victim@elsewhere.test",
    "victim%elsewhere.test@example.org",
    "victim%elsewhere.test@[127.0.0.1]",
    "elsewhere.test!victim@example.org",
    "victim@elsewhere.test@example.org",
    '"victim@elsewhere.test"@example.org',
    '"victim%elsewhere.test"@example.org',
    "@example.org:victim@elsewhere.test",
    "@example.org,@example.org:victim@elsewhere.test",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@example.org.",
    "victim@elsewhere.test.",
    "victim@example.org.elsewhere.test",
    "bob@example.org@elsewhere.test",
    "victim@localhost",
    "postmaster@[127.0.0.1]",
    "victim@elsewhere.test%example.org",
    "victim\\@elsewhere.test@example.org",
    "victim@xn--bcher-kva.test",
]


def test_no_address_trick_turns_the_mx_into_a_relay(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.inbound)
    assert session.command("EHLO relay.probe").startswith("250")
    assert session.command("MAIL FROM:<spammer@elsewhere.test>").startswith("250")
    answers = {trick: session.command(f"RCPT TO:<{trick}>") for trick in RELAY_TRICKS}
    accepted = {trick: answer for trick, answer in answers.items() if answer.startswith("2")}
    assert accepted == {}
    for answer in answers.values():
        assert answer[:9] in {"550 5.7.1", "550 5.1.3", "553 5.1.3", "501 5.5.4", "550 5.1.1"}, answer
    assert session.command("DATA").startswith("503")
    session.close()
    assert QueuedRecipient.objects.count() == 0


def test_relay_depends_on_authentication_never_on_the_client_address(bob):
    assert rcpt_decision("victim@elsewhere.test", authenticated=False).reply == replies.RELAY_DENIED
    assert rcpt_decision("victim@elsewhere.test", authenticated=True).accepted
    assert rcpt_decision("victim%elsewhere.test@example.org", authenticated=True).reply == replies.BAD_DESTINATION


def test_a_verdict_given_from_memory_is_the_verdict_the_database_gives(bob, settings):
    settings.SMTP_DIRECTORY_CACHE = 60
    for authenticated in (False, True):
        slow = rcpt_decision("victim@elsewhere.test", authenticated=authenticated)
        fast = rcpt_decision("other@elsewhere.test", authenticated=authenticated, without_database=True)
        assert (fast.reply, fast.remote) == (slow.reply, ["other@elsewhere.test"] if authenticated else [])
    assert rcpt_decision("bob@example.org", authenticated=True, without_database=True) is None


def test_an_unknown_local_user_is_refused_even_for_authenticated_senders(bob):
    assert rcpt_decision("nobody@example.org", authenticated=True).reply == replies.UNKNOWN_USER


def test_invalid_utf8_in_the_envelope_is_refused_and_the_session_goes_on(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.inbound)
    session.command(b"EHLO bad-\xff-helo.test")
    assert session.command(b"MAIL FROM:<caf\xe9@elsewhere.test> SMTPUTF8") == replies.BAD_SENDER_ADDRESS
    assert session.command("MAIL FROM:<someone@elsewhere.test> SMTPUTF8") == replies.SENDER_OK
    assert session.command(b"RCPT TO:<b\xf6b@example.org>") == replies.BAD_DESTINATION
    assert session.command(b"RCPT TO:<nobody@example.org>") == replies.UNKNOWN_USER
    assert session.command("RCPT TO:<bob@example.org>") == replies.RECIPIENT_OK
    assert session.command("DATA") == replies.START_DATA
    session.send(b"Subject: ok\r\n\r\nfine\r\n.\r\n")
    assert session.reply().startswith("250 2.0.0 OK")
    session.close()
    assert eventually(lambda: MessageLog.objects.filter(helo="bad-\ufffd-helo.test").count() == 2)
