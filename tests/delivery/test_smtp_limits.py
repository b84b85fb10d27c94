"""Limits announced and enforced: SIZE, recipients, connections, line lengths, timeouts; and the
extensions a modern client expects (8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES)."""

from __future__ import annotations

import smtplib
import time

from delivery import replies
from tests.smtp_fixtures import RawSession, welcomed_session


def test_ehlo_announces_the_limits_and_extensions(shared_smtp_service, settings):
    with smtplib.SMTP("127.0.0.1", shared_smtp_service.inbound, timeout=20) as client:
        client.ehlo("client.test")
        for keyword in ("8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "starttls"):
            assert client.has_extn(keyword), keyword
        assert int(client.esmtp_features["size"]) == settings.SMTP_MAX_MESSAGE_SIZE


def test_a_declared_size_over_the_limit_is_refused_at_mail(shared_smtp_service, bob, settings):
    session = RawSession(shared_smtp_service.inbound)
    session.command("EHLO client.test")
    too_big = settings.SMTP_MAX_MESSAGE_SIZE + 1
    assert session.command(f"MAIL FROM:<a@elsewhere.test> SIZE={too_big}") == replies.MESSAGE_TOO_BIG
    session.close()


def test_an_oversized_message_and_too_many_recipients_are_refused(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_MAX_MESSAGE_SIZE="2000", SMTP_MAX_RECIPIENTS="3")
    session = RawSession(service.inbound)
    session.command("EHLO client.test")
    assert session.command("MAIL FROM:<a@elsewhere.test>") == replies.SENDER_OK
    for n in range(3):
        assert session.command(f"RCPT TO:<bob+{n}@example.org>") == replies.RECIPIENT_OK
    assert session.command("RCPT TO:<bob+4@example.org>") == replies.TOO_MANY_RECIPIENTS
    assert session.command("DATA") == replies.START_DATA
    session.send(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 0 + (b"y" * 70 + b"\r\n") * 40 + b".\r\n")
    assert session.reply() == replies.MESSAGE_TOO_BIG
    assert session.command("NOOP").startswith("250")
    session.close()
    assert not (bob.maildir / "new").exists() or not any((bob.maildir / "new").iterdir())


def test_overlong_lines_are_refused_with_enhanced_codes(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.inbound)
    session.command("EHLO client.test")
    assert session.command("NOOP " + "x" * 600) == replies.COMMAND_TOO_LONG
    session.command("MAIL FROM:<a@elsewhere.test>")
    session.command("RCPT TO:<bob@example.org>")
    assert session.command("DATA") == replies.START_DATA
    session.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n")
    assert session.reply() == replies.LINE_TOO_LONG
    assert session.command("NOOP").startswith("250")
    session.close()


def test_connections_are_capped_per_client_address_and_in_total(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_MAX_CONNECTIONS_PER_IP="2", SMTP_MAX_CONNECTIONS="3")
    first = welcomed_session(service.inbound)    # the fixture's readiness probes may still count
    second = welcomed_session(service.inbound)
    assert first.greeting.startswith("220") and second.greeting.startswith("220")
    third = RawSession(service.inbound)
    assert third.greeting == replies.TOO_MANY_CONNECTIONS and third.closed_by_server()
    other = RawSession(service.inbound, source="127.0.0.2")
    assert other.greeting.startswith("220")
    fourth = RawSession(service.inbound, source="127.0.0.3")
    assert fourth.greeting == replies.SERVER_BUSY
    first.close()
    assert welcomed_session(service.inbound).greeting.startswith("220")


def test_an_idle_client_is_cut_off_but_a_slow_moving_data_transfer_is_not(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_COMMAND_TIMEOUT="1.5", SMTP_DATA_TIMEOUT="1")
    idle = RawSession(service.inbound)
    time.sleep(2.2)
    assert idle.reply() == replies.TIMEOUT
    slow = RawSession(service.inbound)
    slow.command("EHLO slow.test")
    slow.command("MAIL FROM:<a@elsewhere.test>")
    slow.command("RCPT TO:<bob@example.org>")
    assert slow.command("DATA") == replies.START_DATA
    slow.send(b"Subject: slow\r\n\r\n")
    for n in range(8):           # 3.2 s in all, twice the command timeout, never 1 s of silence
        time.sleep(0.4)
        slow.send(b"line %d\r\n" % n)
    slow.send(b".\r\n")
    assert slow.reply().startswith("250 2.0.0 OK")
    slow.close()


def test_commands_can_be_pipelined(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.inbound)
    session.command("EHLO client.test")
    session.send(b"MAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<nobody@example.org>\r\n"
                 b"DATA\r\n")
    assert [session.reply() for _ in range(4)] == [
        replies.SENDER_OK, replies.RECIPIENT_OK, replies.UNKNOWN_USER, replies.START_DATA]
    session.send(b"Subject: piped\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert session.reply().startswith("250 2.0.0 OK")
    assert session.reply() == replies.CLOSING


def test_an_smtputf8_sender_and_recipient_are_accepted(shared_smtp_service, bob):
    from mailboxes.provisioning import create_mailbox

    jose = create_mailbox("josé@example.org", "correct horse battery")
    session = RawSession(shared_smtp_service.inbound)
    session.command("EHLO client.test")
    assert session.command("MAIL FROM:<zoë@elsewhere.test> SMTPUTF8".encode()) == replies.SENDER_OK
    assert session.command("RCPT TO:<josé@example.org>".encode()) == replies.RECIPIENT_OK
    assert session.command("DATA") == replies.START_DATA
    session.send("Subject: olá\r\n\r\nçà\r\n.\r\n".encode())
    assert session.reply().startswith("250 2.0.0 OK")
    session.close()
    [stored] = (jose.maildir / "new").iterdir()
    assert stored.read_bytes().endswith("Subject: olá\r\n\r\nçà\r\n".encode())


def test_a_message_far_over_the_size_limit_is_drained_and_refused_and_the_session_goes_on(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_MAX_MESSAGE_SIZE="2000")
    session = RawSession(service.inbound)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@elsewhere.test>")
    session.command("RCPT TO:<bob@example.org>")
    assert session.command("DATA") == replies.START_DATA
    for _ in range(50):
        session.send((b"y" * 998 + b"\r\n") * 20)
    session.send(b"\r")
    time.sleep(0.05)
    session.send(b"\n.\r\n")
    assert session.reply() == replies.MESSAGE_TOO_BIG
    assert session.command("NOOP").startswith("250")
    session.close()
    assert not (bob.maildir / "new").exists() or not any((bob.maildir / "new").iterdir())
