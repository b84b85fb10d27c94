"""The same rules seen through swaks, the tool operators use to probe a mail server."""

from __future__ import annotations

import subprocess

from delivery import replies
from tests.support import PASSWORD, need_program


def swaks(*args: str) -> str:
    result = subprocess.run([need_program("swaks"), "--server", *args, "--timeout", "20", "--hide-informational"],
                            capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def test_swaks_submits_over_starttls_with_auth(shared_smtp_service, bob):
    out = swaks(f"127.0.0.1:{shared_smtp_service.submission}", "--tls", "--auth", "PLAIN",
                "--auth-user", "bob@example.org", "--auth-password", PASSWORD,
                "--from", "bob@example.org", "--to", "bob@example.org", "--header", "From: Bob <bob@example.org>")
    assert replies.AUTH_OK in out and "250 2.0.0 OK: queued as" in out
    assert len(list((bob.maildir / "new").iterdir())) == 1


def test_swaks_sees_a_spoofed_from_header_refused(shared_smtp_service, bob):
    out = swaks(f"127.0.0.1:{shared_smtp_service.submissions}", "--tlsc", "--auth", "LOGIN",
                "--auth-user", "bob@example.org", "--auth-password", PASSWORD,
                "--from", "bob@example.org", "--to", "friend@remote.test", "--header", "From: ceo@example.org")
    assert replies.FROM_NOT_ALLOWED in out


def test_swaks_gets_no_auth_on_the_mx_port_even_after_starttls(shared_smtp_service, bob):
    out = swaks(f"127.0.0.1:{shared_smtp_service.inbound}", "--tls", "--auth", "PLAIN",
                "--auth-user", "bob@example.org", "--auth-password", PASSWORD, "--to", "bob@example.org")
    assert "250-AUTH" not in out
    assert "Host did not advertise authentication" in out and "queued as" not in out
