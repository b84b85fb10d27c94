"""SMTP_RELAY_HOST with SMTP_RELAY_USER / SMTP_RELAY_PASSWORD: mail goes to the smarthost with
AUTH, only over STARTTLS with a certificate that checks out; a refusal defers, never bounces.

The smarthost is a real aiosmtpd server on loopback that takes mail only after AUTH, with a
certificate for `localhost` issued by a test CA (MTA_STS_CA_FILE is the trust store)."""

from __future__ import annotations

import pytest

from delivery.models import QueuedRecipient
from delivery.queue import enqueue
from tests.delivery.outbound_peers import CertificateAuthority, Sink, broken_tls_context, self_signed_context
from tests.delivery.test_outbound_delivery import MESSAGE, run_queue

State = QueuedRecipient.State
USER, PASSWORD = "mailhost@relay.test", "relay secret 1"


@pytest.fixture
def ca(tmp_path, settings):
    authority = CertificateAuthority(tmp_path)
    settings.MTA_STS_CA_FILE = str(authority.bundle)
    return authority


def use_smarthost(settings, sink: Sink, password: str = PASSWORD) -> None:
    settings.SMTP_RELAY_HOST = ("localhost", sink.port)
    settings.SMTP_RELAY_USER, settings.SMTP_RELAY_PASSWORD = USER, password


def test_mail_goes_to_the_smarthost_authenticated_over_verified_tls(bob, settings, ca):
    with Sink(host="127.0.0.1", tls=ca.server_context("localhost"), logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost)
        message = enqueue("bob@example.org", ["someone@remote.test", "other@elsewhere.test"], MESSAGE)
        run_queue()
        received = smarthost.wait_for(2)
    assert smarthost.logins and set(smarthost.logins) == {USER}
    assert sorted(r for m in received for r in m.rcpt_tos) == ["other@elsewhere.test", "someone@remote.test"]
    assert all(m.tls for m in received)
    assert {r.state for r in message.recipients.all()} == {State.DELIVERED}


def test_a_refused_password_defers_the_mail_with_the_smarthosts_reply(bob, settings, ca):
    with Sink(host="127.0.0.1", tls=ca.server_context("localhost"), logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost, password="wrong")
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        assert smarthost.messages == [] and smarthost.logins == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED
    assert "refused the relay credentials" in rcpt.last_reply and "535" in rcpt.last_reply


def test_credentials_are_never_sent_to_a_smarthost_without_starttls(bob, settings):
    with Sink(host="127.0.0.1", logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost)
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        assert smarthost.messages == [] and smarthost.logins == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "never sent in plaintext" in rcpt.last_reply


def test_credentials_are_never_sent_to_a_smarthost_whose_certificate_does_not_check_out(bob, settings, ca,
                                                                                       tmp_path):
    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    with Sink(host="127.0.0.1", tls=self_signed_context(untrusted, "localhost"),
              logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost)
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        assert smarthost.messages == [] and smarthost.logins == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "certificate" in rcpt.last_reply.lower()


def test_a_smarthost_without_credentials_still_takes_mail_over_opportunistic_tls(bob, settings, tmp_path):
    with Sink(host="127.0.0.1", tls=self_signed_context(tmp_path, "localhost")) as smarthost:
        settings.SMTP_RELAY_HOST = ("localhost", smarthost.port)
        enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        [received] = smarthost.wait_for(1)
    assert received.tls and smarthost.logins == []


def test_a_smarthost_on_implicit_tls_gets_the_credentials_inside_tls_from_the_first_byte(bob, settings, ca):
    with Sink(host="127.0.0.1", tls=ca.server_context("localhost"), implicit_tls=True,
              logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost)
        settings.SMTP_RELAY_TLS = "implicit"
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        [received] = smarthost.wait_for(1)
    assert received.tls and smarthost.logins == [USER]
    rcpt = message.recipients.get()
    assert rcpt.state == State.DELIVERED and rcpt.tls_version.startswith("TLSv1.")


def test_an_implicit_tls_smarthost_whose_certificate_does_not_check_out_gets_nothing(bob, settings, ca, tmp_path):
    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    with Sink(host="127.0.0.1", tls=self_signed_context(untrusted, "localhost"), implicit_tls=True,
              logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost)
        settings.SMTP_RELAY_TLS = "implicit"
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        assert smarthost.messages == [] and smarthost.logins == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "certificate" in rcpt.last_reply.lower()


def test_a_smarthost_whose_tls_handshake_fails_never_gets_the_credentials_in_plaintext(bob, settings, tmp_path):
    with Sink(host="127.0.0.1", tls=broken_tls_context(tmp_path), logins={USER: PASSWORD}) as smarthost:
        use_smarthost(settings, smarthost)
        message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
        run_queue()
        assert smarthost.messages == [] and smarthost.logins == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "TLS handshake failed" in rcpt.last_reply


def settings_run(tmp_path, args: list[str], **env: str):
    """`python <args>` in a fresh process whose settings come from `env` alone."""
    import subprocess
    import sys

    from tests.support import ROOT

    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "mailhost.settings",
                               "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", **env})


@pytest.mark.parametrize(("relay", "expected"), [("smtp.example.net:465", "implicit"),
                                                 ("smtp.example.net:587", "starttls")])
def test_port_465_means_implicit_tls_unless_told_otherwise(relay, expected, tmp_path):
    result = settings_run(tmp_path, ["-c", "import django; django.setup(); from django.conf import settings; "
                                           "print(settings.SMTP_RELAY_TLS)"], SMTP_RELAY_HOST=relay)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_relay_credentials_without_a_relay_host_are_a_configuration_error(tmp_path):
    result = settings_run(tmp_path, ["manage.py", "check"], SMTP_RELAY_USER=USER, SMTP_RELAY_PASSWORD=PASSWORD)
    assert result.returncode != 0
    assert "SMTP_RELAY_USER and SMTP_RELAY_PASSWORD need SMTP_RELAY_HOST" in result.stderr


def test_an_unknown_relay_tls_mode_is_a_configuration_error(tmp_path):
    result = settings_run(tmp_path, ["manage.py", "check"], SMTP_RELAY_HOST="smtp.example.net:465",
                          SMTP_RELAY_TLS="ssl")
    assert result.returncode != 0
    assert "SMTP_RELAY_TLS must be starttls or implicit" in result.stderr
