"""STARTTLS: the event loop layers TLS on the connection, and what the client said before it
counts for nothing afterwards (RFC 3207 4.2): not its EHLO, not a line it slipped in after
STARTTLS in plaintext. A client that breaks the handshake, or leaves without a word, gives its
place back to the next."""

from __future__ import annotations

import base64
import socket

from delivery import replies
from tests.smtp_fixtures import RawSession, client_tls, welcomed_session
from tests.support import PASSWORD


def secured(session: RawSession) -> RawSession:
    """The same session, its socket now speaking TLS; what was buffered in plaintext is kept."""
    session.sock = client_tls().wrap_socket(session.sock, server_hostname="mail.mailhost.test")
    return session


def test_a_session_over_starttls_authenticates_and_is_told_its_cipher(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.submission)
    assert "AUTH" not in session.command("EHLO client.test")
    assert session.command("STARTTLS").startswith("220")
    secured(session)
    ehlo = session.command("EHLO client.test")
    assert "PLAIN" in ehlo and "STARTTLS" not in ehlo
    token = base64.b64encode(b"\0bob@example.org\0" + PASSWORD.encode()).decode()
    assert session.command(f"AUTH PLAIN {token}").startswith("235")
    assert session.sock.version() in ("TLSv1.2", "TLSv1.3")
    session.close()


def test_plaintext_sent_after_starttls_is_dropped_not_answered_inside_tls(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.submission)
    session.command("EHLO client.test")
    # An attacker on the path appends a command to the client's STARTTLS (CVE-2011-0411).
    session.send(b"STARTTLS\r\nNOOP injected\r\n")
    assert session.reply().startswith("220")
    secured(session)
    # The first reply inside TLS answers our EHLO, not the injected NOOP.
    assert session.command("EHLO client.test").startswith("250-")
    session.close()


def test_starttls_starts_a_new_session_that_needs_ehlo_again(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.submission)
    session.command("EHLO client.test")
    assert session.command("STARTTLS").startswith("220")
    secured(session)
    assert session.command("MAIL FROM:<bob@example.org>").startswith("503")
    assert session.command("STARTTLS") == replies.TLS_ALREADY_ACTIVE
    session.close()


def test_a_broken_handshake_closes_that_connection_and_the_next_client_is_served(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_MAX_CONNECTIONS_PER_IP="1")
    session = welcomed_session(service.submission)   # the fixture's readiness probes may still count
    session.command("EHLO client.test")
    assert session.command("STARTTLS").startswith("220")
    session.send(b"this is not a TLS client hello\r\n" * 4)
    assert session.closed_by_server()
    session.close()
    assert welcomed_session(service.submission).greeting.startswith("220")


def test_clients_that_leave_without_a_word_give_their_place_back(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_MAX_CONNECTIONS_PER_IP="1")
    for _ in range(3):
        socket.create_connection(("127.0.0.1", service.submission)).close()     # before the greeting
        RawSession(service.submission).close()                                  # after it
    assert welcomed_session(service.submission).greeting.startswith("220")
