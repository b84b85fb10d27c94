"""Logging in: addresses or admin names, throttled failures, TOTP for admins who turned it on."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.models import AuditLog
from tests.support import PASSWORD


def _login(client, username, password=PASSWORD, ip="192.0.2.10"):
    return client.post(reverse("portal:login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def _code(device) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def test_a_mailbox_user_logs_in_with_the_address_in_any_case(client, bob):
    response = _login(client, "BOB@Example.ORG")
    assert response.status_code == 302
    assert client.get("/").url == reverse("me:overview")


def test_an_admin_logs_in_with_the_account_name_and_the_login_is_audited(client, alice):
    assert _login(client, "alice").status_code == 302
    row = AuditLog.objects.get(action="login")
    assert (row.actor, row.ip) == (alice, "192.0.2.10")
    assert "example.org" in client.get("/").content.decode()


def test_a_wrong_password_gets_a_clear_error(client, bob):
    response = _login(client, "bob@example.org", "wrong password")
    assert response.status_code == 200
    assert "Wrong mail address, account name or password." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_distinct_wrong_passwords_lock_the_account_even_for_the_right_password(client, bob, settings):
    settings.PORTAL_LOGIN_MAX_FAILURES = 3
    for n in range(3):
        _login(client, "bob@example.org", f"guess {n}", ip=f"198.51.{n}.1")
    response = _login(client, "Bob@example.org", ip="203.0.113.5")
    assert response.status_code == 429
    assert "Too many failed logins for this account" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_one_stale_password_retried_does_not_lock_the_owner_out(client, bob, settings):
    settings.PORTAL_LOGIN_MAX_FAILURES = 3
    for _ in range(6):
        _login(client, "bob@example.org", "last year's password")
    assert _login(client, "bob@example.org").status_code == 302


def test_many_failures_from_one_network_block_it_but_not_other_networks(client, bob, alice, settings):
    settings.PORTAL_LOGIN_MAX_NETWORK_FAILURES = 4
    for n in range(4):
        _login(client, f"user{n}@example.org", "x" * 10, ip=f"192.0.2.{n + 1}")
    response = _login(client, "alice", ip="192.0.2.200")
    assert response.status_code == 429
    assert "Too many failed logins from your network" in response.content.decode()
    assert _login(Client(), "alice", ip="198.51.100.7").status_code == 302


def test_ipv6_clients_are_counted_per_48(client, bob, settings):
    settings.PORTAL_LOGIN_MAX_NETWORK_FAILURES = 2
    _login(client, "a@example.org", "x" * 10, ip="2001:db8:1:1::1")
    _login(client, "b@example.org", "x" * 10, ip="2001:db8:1:ffff::2")
    assert _login(client, "bob@example.org", ip="2001:db8:1:2::3").status_code == 429
    assert _login(client, "bob@example.org", ip="2001:db8:2::3").status_code == 302


def test_a_successful_login_clears_the_accounts_failures(client, bob, settings):
    settings.PORTAL_LOGIN_MAX_FAILURES = 3
    _login(client, "bob@example.org", "guess 1")
    _login(client, "bob@example.org", "guess 2")
    assert _login(client, "bob@example.org").status_code == 302
    _login(Client(), "bob@example.org", "guess 3")
    assert _login(Client(), "bob@example.org").status_code == 302


def test_a_suspended_mailbox_cannot_log_in(client, bob):
    bob.active = False
    bob.save()
    assert _login(client, "bob@example.org").status_code == 200


def test_login_ignores_a_next_url_to_another_site(client, alice):
    response = client.post(reverse("portal:login") + "?next=https://evil.test/",
                           {"username": "alice", "password": PASSWORD})
    assert response.url == "/"


def test_django_admin_login_goes_through_the_portal(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response.url == "/login/?next=/admin/"


def test_logout_ends_the_session(client, bob):
    client.force_login(bob.user)
    assert client.post(reverse("portal:logout")).url == reverse("portal:login")
    assert client.get(reverse("me:overview")).status_code == 302


class TestTwoFactor:
    def test_an_admin_sets_up_totp_by_scanning_a_qr_code_and_confirming_a_code(self, client, alice):
        client.force_login(alice)
        page = client.get(reverse("portal:otp_setup")).content.decode()
        assert "<svg" in page
        device = TOTPDevice.objects.get(user=alice, confirmed=False)
        assert client.post(reverse("portal:otp_setup"), {"token": "000000" if _code(device) != "000000"
                                                         else "111111"}).status_code == 200
        device.refresh_from_db()
        device.throttle_reset()  # django-otp makes a wrong code cost a delay before the next try
        response = client.post(reverse("portal:otp_setup"), {"token": _code(device)})
        assert response.status_code == 302
        device.refresh_from_db()
        assert device.confirmed
        assert AuditLog.objects.filter(action="2fa.enable", actor=alice).exists()

    @pytest.fixture
    def alice_2fa(self, alice):
        return TOTPDevice.objects.create(user=alice, name="portal", confirmed=True)

    def test_an_admin_with_totp_is_not_logged_in_until_the_code_is_right(self, client, alice_2fa):
        response = _login(client, "alice")
        assert response.url.startswith(reverse("portal:login_verify"))
        assert "_auth_user_id" not in client.session
        assert client.get("/").status_code == 302
        bad = client.post(reverse("portal:login_verify"), {"token": "12345x"})
        assert "Enter the 6 digits" in bad.content.decode()
        wrong = "000000" if _code(alice_2fa) != "000000" else "111111"
        assert "not right" in client.post(reverse("portal:login_verify"), {"token": wrong}).content.decode()
        assert "_auth_user_id" not in client.session
        too_soon = client.post(reverse("portal:login_verify"), {"token": _code(alice_2fa)})
        assert "wait a few seconds" in too_soon.content.decode()
        alice_2fa.refresh_from_db()
        alice_2fa.throttle_reset()
        response = client.post(reverse("portal:login_verify"), {"token": _code(alice_2fa)})
        assert response.status_code == 302
        assert client.get(reverse("domains:list")).status_code == 200

    def test_the_verify_step_needs_a_password_first(self, client, alice_2fa):
        assert client.post(reverse("portal:login_verify"), {"token": _code(alice_2fa)}).url == reverse("portal:login")

    def test_wrong_codes_count_towards_the_throttle(self, client, alice_2fa, settings):
        settings.PORTAL_LOGIN_MAX_FAILURES = 2
        _login(client, "alice")
        for wrong in ("000001", "000002"):
            if wrong != _code(alice_2fa):
                client.post(reverse("portal:login_verify"), {"token": wrong})
                alice_2fa.refresh_from_db()
                alice_2fa.throttle_reset()
        response = client.post(reverse("portal:login_verify"), {"token": _code(alice_2fa)})
        assert response.status_code == 429

    def test_turning_totp_off_needs_a_current_code(self, client, alice, alice_2fa):
        client.force_login(alice)
        client.post(reverse("portal:otp_disable"), {"token": "999999" if _code(alice_2fa) != "999999" else "1"})
        assert TOTPDevice.objects.filter(user=alice).exists()
        alice_2fa.refresh_from_db()
        alice_2fa.throttle_reset()
        client.post(reverse("portal:otp_disable"), {"token": _code(alice_2fa)})
        assert not TOTPDevice.objects.filter(user=alice).exists()
        assert AuditLog.objects.filter(action="2fa.disable").exists()

    def test_mailbox_users_log_in_without_a_code(self, client, bob):
        assert _login(client, "bob@example.org").url == "/"
