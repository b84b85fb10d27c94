"""SMTP AUTH: only under TLS, only on submission, against mailbox passwords and credentials;
brute force is throttled by distinct failures without locking out the real user."""

from __future__ import annotations

import base64
import smtplib

import pytest

from delivery import replies
from delivery.smtp_auth import client_network
from mailboxes.models import RelayCredential
from tests.smtp_fixtures import RawSession, client_tls
from tests.support import PASSWORD


def login_587(service, user, password):
    client = smtplib.SMTP("127.0.0.1", service.submission, timeout=20)
    client.starttls(context=client_tls())
    client.login(user, password)
    return client


def test_a_mailbox_logs_in_with_plain_and_login_after_starttls(smtp_service, bob):
    for mechanism in ("PLAIN", "LOGIN"):
        client = smtplib.SMTP("127.0.0.1", smtp_service.submission, timeout=20)
        client.starttls(context=client_tls())
        client.ehlo()
        client.user, client.password = "BOB@Example.org", PASSWORD
        code, text = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert f"{code} {text.decode()}" == replies.AUTH_OK
        client.quit()


def test_port_465_offers_and_accepts_auth_from_the_first_byte(smtp_service, bob):
    with smtplib.SMTP_SSL("127.0.0.1", smtp_service.submissions, timeout=20, context=client_tls()) as client:
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]
        assert client.login("bob@example.org", PASSWORD)[0] == 235


def test_a_wrong_password_is_refused_with_535(smtp_service, bob):
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        login_587(smtp_service, "bob@example.org", "wrong password")
    assert f"{failed.value.smtp_code} {failed.value.smtp_error.decode()}" == replies.AUTH_FAILED


def test_auth_is_neither_offered_nor_accepted_before_tls(smtp_service, bob):
    session = RawSession(smtp_service.submission)
    assert "AUTH" not in session.command("EHLO client.test")
    plain = base64.b64encode(f"\0bob@example.org\0{PASSWORD}".encode()).decode()
    assert session.command(f"AUTH PLAIN {plain}") == replies.AUTH_NEEDS_TLS
    assert session.command("MAIL FROM:<bob@example.org>") == replies.AUTH_REQUIRED
    session.close()


def test_auth_is_neither_offered_nor_accepted_on_the_mx_port(smtp_service, bob):
    client = smtplib.SMTP("127.0.0.1", smtp_service.inbound, timeout=20)
    client.starttls(context=client_tls())
    client.ehlo()
    assert not client.has_extn("auth")
    plain = base64.b64encode(f"\0bob@example.org\0{PASSWORD}".encode()).decode()
    code, text = client.docmd("AUTH", f"PLAIN {plain}")
    assert f"{code} {text.decode()}" == replies.AUTH_NOT_ON_MX
    client.quit()


def test_an_app_password_logs_in_with_the_mailbox_address_and_a_domain_credential_with_its_login(
        smtp_service, bob):
    _app, app_secret = RelayCredential.issue(domain=bob.domain, label="phone", mailbox=bob)
    relay, relay_secret = RelayCredential.issue(domain=bob.domain, label="crm", allowed_senders=["@example.org"])
    login_587(smtp_service, "bob@example.org", app_secret).quit()
    login_587(smtp_service, relay.login, relay_secret).quit()
    relay.revoke()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        login_587(smtp_service, relay.login, relay_secret)


def test_a_disabled_mailbox_cannot_log_in(smtp_service, bob):
    bob.active = False
    bob.save()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        login_587(smtp_service, "bob@example.org", PASSWORD)


def _failed_logins(service, count, user="bob@example.org", password=lambda n: f"guess {n}"):
    answers = []
    client = smtplib.SMTP("127.0.0.1", service.submission, timeout=20)
    client.starttls(context=client_tls())
    client.ehlo()
    for n in range(count):
        plain = base64.b64encode(f"\0{user}\0{password(n)}".encode()).decode()
        code, text = client.docmd("AUTH", f"PLAIN {plain}")
        answers.append(f"{code} {text.decode()}")
    client.close()
    return answers


def test_ten_distinct_failures_from_a_network_block_further_auth_with_454(smtp_service, bob):
    answers = _failed_logins(smtp_service, 10, user="x@example.org")
    assert answers == [replies.AUTH_FAILED] * 10
    # Even the right password is not checked now: that is what stops a brute force run.
    assert _failed_logins(smtp_service, 1, password=lambda n: PASSWORD) == [replies.AUTH_THROTTLED]
    assert "auth throttled client=127.0.0.1" in smtp_service.log()


def test_the_same_wrong_password_retried_does_not_lock_out_the_user(smtp_service, bob):
    assert _failed_logins(smtp_service, 15, password=lambda n: "old password") == [replies.AUTH_FAILED] * 15
    login_587(smtp_service, "bob@example.org", PASSWORD).quit()


def test_a_client_that_logged_in_recently_is_not_throttled(smtp_service, bob):
    login_587(smtp_service, "bob@example.org", PASSWORD).quit()
    assert _failed_logins(smtp_service, 12)[-1] == replies.AUTH_FAILED
    login_587(smtp_service, "bob@example.org", PASSWORD).quit()


def test_failures_are_counted_per_slash_24_and_slash_48():
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert client_network("::ffff:192.0.2.9") == "192.0.2.0/24"
