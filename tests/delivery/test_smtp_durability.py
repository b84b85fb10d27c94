"""Durable before 250, stored byte for byte, and a clean stop on SIGTERM."""

from __future__ import annotations

import smtplib

from delivery.models import MessageLog, QueuedRecipient
from mailboxes.models import Mailbox
from mailboxes.provisioning import create_alias
from tests.smtp_fixtures import RawSession


def test_a_message_acknowledged_with_250_survives_kill_9_of_the_service(smtp_service, bob):
    create_alias("team@example.org", ["bob@example.org", "friend@remote.test"])
    data = b"From: someone@elsewhere.test\r\nSubject: durable\r\n\r\nkeep me\r\n"
    session = RawSession(smtp_service.inbound)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<someone@elsewhere.test>")
    session.command("RCPT TO:<team@example.org>")
    session.command("DATA")
    session.send(data + b".\r\n")
    assert session.reply().startswith("250 ")
    smtp_service.kill9()
    [stored] = (bob.maildir / "new").iterdir()
    assert stored.read_bytes().endswith(data)
    assert not any((bob.maildir / "tmp").iterdir())
    assert QueuedRecipient.objects.get().address == "friend@remote.test"


def test_an_8bit_body_with_utf8_headers_is_stored_byte_for_byte(shared_smtp_service, bob):
    data = ("From: Jürgen Groß <jg@elsewhere.test>\r\nSubject: Grüße aus Köln\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Schöne Grüße, 😀\r\n").encode() + b"raw latin-1 \xe9\xe8 and \xff\xfe bytes\r\n..leading dot\r\n"
    with smtplib.SMTP("127.0.0.1", shared_smtp_service.inbound, timeout=20) as client:
        client.sendmail("jg@elsewhere.test", ["bob@example.org"], data, mail_options=["BODY=8BITMIME"])
    [stored] = (bob.maildir / "new").iterdir()
    raw = stored.read_bytes()
    assert raw.endswith(data)
    prepended = raw[: -len(data)]
    assert prepended.startswith(b"Received: ") and b"\r\nAuthentication-Results: mail.mailhost.test;" in prepended


def test_sigterm_stops_the_service_cleanly(smtp_service, bob):
    idle = RawSession(smtp_service.inbound)
    assert smtp_service.stop(timeout=15) == 0
    assert idle.closed_by_server()
    assert "stopped" in smtp_service.log()


def test_the_log_rows_and_quota_counts_written_behind_the_reply_are_flushed_by_sigterm(smtp_service, bob):
    data = b"From: someone@elsewhere.test\r\nSubject: counted\r\n\r\ncount me\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_service.inbound, timeout=20) as client:
        for _ in range(20):
            client.sendmail("someone@elsewhere.test", ["bob@example.org"], data)
    assert smtp_service.stop(timeout=15) == 0
    stored = list((bob.maildir / "new").iterdir())
    assert len(stored) == 20
    assert MessageLog.objects.filter(domain=bob.domain, result="accepted").count() == 20
    assert Mailbox.objects.get(pk=bob.pk).used_bytes == sum(path.stat().st_size for path in stored)
