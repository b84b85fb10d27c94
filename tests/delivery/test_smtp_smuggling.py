"""SMTP smuggling (CVE-2023-51766, CVE-2024-27305 and kin): only <CRLF>.<CRLF> ends DATA, and a
bare CR or LF anywhere in DATA refuses the message with 550 5.6.11 while the session goes on."""

from __future__ import annotations

import pytest

from delivery import replies
from delivery.models import MessageLog
from tests.smtp_fixtures import RawSession
from tests.support import eventually

FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r", b"\n.\r", b"\r.\n",
             b"\r\n\x00.\r\n", b"\n\n.\n\n"]
SMUGGLED = (b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
            b"From: ceo@example.org\r\nSubject: smuggled\r\n\r\npay the invoice\r\n")


def open_transaction(service) -> RawSession:
    session = RawSession(service.inbound)
    session.command("EHLO attacker.test")
    assert session.command("MAIL FROM:<someone@elsewhere.test>") == replies.SENDER_OK
    assert session.command("RCPT TO:<bob@example.org>") == replies.RECIPIENT_OK
    assert session.command("DATA") == replies.START_DATA
    return session


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=[repr(e) for e in FAKE_ENDS])
def test_a_fake_end_of_data_neither_ends_data_nor_smuggles_a_second_message(shared_smtp_service, bob, fake_end):
    session = open_transaction(shared_smtp_service)
    session.send(b"From: someone@elsewhere.test\r\nSubject: cover\r\n\r\nhello" + fake_end + SMUGGLED + b".\r\n")
    answer = session.reply()
    if b"\x00" in fake_end:   # CRLF NUL . CRLF has no bare CR/LF: one ordinary message, NUL included
        assert answer.startswith("250 ")
    else:
        assert answer == replies.BARE_LINE_ENDING
    assert session.command("NOOP").startswith("250")
    session.close()
    stored = list((bob.maildir / "new").glob("*")) if (bob.maildir / "new").exists() else []
    assert all(b"Subject: smuggled" not in path.read_bytes().split(b"\r\n\r\n")[0] for path in stored)
    assert len(stored) <= 1


@pytest.mark.parametrize("body", [b"line one\nline two\r\n", b"line one\rline two\r\n", b"ends with bare LF\n"])
def test_a_bare_cr_or_lf_is_refused_and_the_connection_stays_usable(shared_smtp_service, bob, body):
    session = open_transaction(shared_smtp_service)
    session.send(b"Subject: bare\r\n\r\n" + body + b"\r\n.\r\n")
    assert session.reply() == replies.BARE_LINE_ENDING
    # The same session sends a clean message afterwards.
    assert session.command("MAIL FROM:<someone@elsewhere.test>") == replies.SENDER_OK
    assert session.command("RCPT TO:<bob@example.org>") == replies.RECIPIENT_OK
    assert session.command("DATA") == replies.START_DATA
    session.send(b"Subject: clean\r\n\r\nfine\r\n.\r\n")
    assert session.reply().startswith("250 2.0.0 OK")
    session.close()
    [stored] = (bob.maildir / "new").iterdir()
    assert b"Subject: clean" in stored.read_bytes()
    assert eventually(lambda: MessageLog.objects.filter(domain=bob.domain, result="refused").count() == 1)
