"""A mailbox user's own pages: password, forwarding, auto-reply, app passwords, log, quota."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.urls import reverse

from delivery.models import MessageLog
from mailboxes.models import RelayCredential
from mailboxes.provisioning import create_mailbox
from portal.models import AuditLog
from tests.support import PASSWORD


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob.user)
    return client


def test_bob_sees_his_quota_usage(bob_client, bob):
    bob.used_bytes = bob.quota // 4
    bob.save()
    page = bob_client.get(reverse("me:overview")).content.decode()
    assert "(25%)" in page and 'value="25"' in page


def test_bob_changes_his_password_and_stays_logged_in(bob_client):
    wrong = bob_client.post(reverse("me:password"), {"old_password": "nope", "new_password1": "new secret 123",
                                                     "new_password2": "new secret 123"})
    assert "Your old password was entered incorrectly" in wrong.content.decode()
    response = bob_client.post(reverse("me:password"), {"old_password": PASSWORD, "new_password1": "new secret 123",
                                                         "new_password2": "new secret 123"})
    assert response.url == reverse("me:overview")
    assert authenticate(username="bob@example.org", password="new secret 123") is not None
    assert bob_client.get(reverse("me:overview")).status_code == 200
    assert AuditLog.objects.filter(action="me.password_change").exists()


def test_bob_sets_forwarding_and_bad_addresses_are_refused(bob_client, bob):
    response = bob_client.post(reverse("me:forwarding"), {"forward_to": "friend@remote.test\nnot-an-address"})
    assert "errorlist" in response.content.decode()
    bob_client.post(reverse("me:forwarding"), {"forward_to": "friend@remote.test", "forward_keep_copy": "on"})
    bob.refresh_from_db()
    assert bob.forward_to == ["friend@remote.test"] and bob.forward_keep_copy


def test_an_auto_reply_needs_a_message_and_an_end_after_its_start(bob_client, bob):
    response = bob_client.post(reverse("me:autoreply"), {
        "autoreply_enabled": "on", "autoreply_subject": "Away", "autoreply_body": "",
        "autoreply_start": "2026-12-20 00:00", "autoreply_end": "2026-12-01 00:00", "autoreply_interval_days": 7})
    page = response.content.decode()
    assert "Write the message to send." in page and "The end must come after the start." in page
    bob_client.post(reverse("me:autoreply"), {"autoreply_enabled": "on", "autoreply_subject": "Away",
                                              "autoreply_body": "Back in January.", "autoreply_interval_days": 7})
    bob.refresh_from_db()
    assert bob.autoreply_enabled and bob.autoreply_body == "Back in January."


def test_an_app_password_is_shown_once_and_logs_in_as_bob(bob_client, bob):
    page = bob_client.post(reverse("me:app_passwords"), {"label": "phone"}).content.decode()
    secret = page.split('<span class="secret">')[1].split("</span>")[0]
    cred = RelayCredential.objects.get(mailbox=bob, label="phone")
    assert cred.check_secret(secret) and cred.can_send_as("bob@example.org")
    assert secret not in bob_client.get(reverse("me:app_passwords")).content.decode()
    bob_client.post(reverse("me:app_password_revoke", kwargs={"cred_pk": cred.pk}))
    cred.refresh_from_db()
    assert not cred.check_secret(secret)


def test_bobs_log_shows_his_messages_only(bob_client, bob, example_org, other_test):
    create_mailbox("xbob@example.org", PASSWORD)
    rows = [("alice@remote.test", "bob@example.org", "for bob"),
            ("bob@example.org", "x@remote.test", "from bob"),
            ("y@remote.test", "a@example.org, bob@example.org", "cc bob"),
            ("z@remote.test", "xbob@example.org", "for xbob"),
            ("z@remote.test", "bob@example.orgx", "lookalike")]
    for sender, rcpt, subject in rows:
        MessageLog.objects.create(domain=example_org, direction="inbound", result="accepted", mail_from=sender,
                                  recipients=rcpt, subject=subject)
    MessageLog.objects.create(domain=other_test, direction="inbound", result="accepted", mail_from="q@r.test",
                              recipients="bob@example.org", subject="other tenant")
    page = bob_client.get(reverse("me:log")).content.decode()
    assert all(s in page for s in ("for bob", "from bob", "cc bob"))
    assert not any(s in page for s in ("for xbob", "lookalike", "other tenant"))


def test_bob_searches_his_own_log_only(bob_client, bob, example_org):
    for sender, rcpt, subject in [("a@remote.test", "bob@example.org", "invoice march"),
                                  ("b@remote.test", "bob@example.org", "lunch"),
                                  ("c@remote.test", "other@example.org", "invoice april")]:
        MessageLog.objects.create(domain=example_org, direction="inbound", result="accepted", mail_from=sender,
                                  recipients=rcpt, subject=subject)
    page = bob_client.get(reverse("me:log"), {"q": "INVOICE"}).content.decode()
    assert "invoice march" in page and "lunch" not in page and "invoice april" not in page
