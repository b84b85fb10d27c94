"""Bearer tokens (good, bad, revoked, shown once, stored as a hash) and the portal's session with CSRF."""

from __future__ import annotations

import hashlib
import io
from contextlib import redirect_stderr

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.middleware.csrf import _get_new_csrf_string
from rest_framework.test import APIClient

from api.models import ApiToken
from tests.support import PASSWORD


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_good_token_authenticates_and_records_its_use(alice, example_org):
    token, plaintext = ApiToken.issue(alice, "ci")
    response = bearer(plaintext).get("/api/domains/")
    assert response.status_code == 200
    assert [d["name"] for d in response.json()["results"]] == ["example.org"]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_only_a_hash_of_the_token_is_stored(alice):
    token, plaintext = ApiToken.issue(alice)
    token.refresh_from_db()
    assert token.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in {token.key_hash, token.prefix, token.name}
    assert plaintext.startswith(token.prefix) and len(token.prefix) < 12


def test_no_credentials_is_a_401_with_a_bearer_challenge(db):
    response = APIClient().get("/api/domains/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("header", ["Bearer mh_wrong", "Bearer ", "Bearer a b"])
def test_a_bad_token_is_a_401(alice, header):
    ApiToken.issue(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/domains/")
    assert response.status_code == 401
    assert "token" in response.json()["detail"].lower() or "Bearer" in response.json()["detail"]


def test_a_revoked_token_is_a_401(alice):
    token, plaintext = ApiToken.issue(alice)
    assert bearer(plaintext).get("/api/domains/").status_code == 200
    token.revoke()
    response = bearer(plaintext).get("/api/domains/")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid or revoked token."})


def test_the_token_of_a_disabled_account_is_a_401(alice):
    _, plaintext = ApiToken.issue(alice)
    alice.is_active = False
    alice.save()
    assert bearer(plaintext).get("/api/domains/").status_code == 401


def test_createapitoken_prints_a_working_token_once(bob):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        call_command("createapitoken", "BOB@Example.org", "--name", "thunderbird sync", stdout=out)
    plaintext = out.getvalue().strip()
    assert plaintext.startswith("mh_") and "\n" not in plaintext
    assert "not shown again" in err.getvalue()
    token = ApiToken.objects.get(user=bob.user)
    assert token.name == "thunderbird sync"
    response = bearer(plaintext).get(f"/api/mailboxes/{bob.pk}/")
    assert response.json()["address"] == "bob@example.org"


def test_createapitoken_refuses_an_unknown_account(db):
    with pytest.raises(CommandError, match="no account 'nobody@example.org'"):
        call_command("createapitoken", "nobody@example.org")


def test_a_portal_session_reads_without_a_token(bob):
    client = APIClient()
    assert client.login(username="bob@example.org", password=PASSWORD)
    assert client.get("/api/mailboxes/").json()["results"][0]["address"] == "bob@example.org"


def test_a_session_write_needs_the_csrf_token(alice, example_org):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    body = {"address": "dave@example.org", "password": PASSWORD}
    refused = client.post("/api/mailboxes/", body, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    accepted = client.post("/api/mailboxes/", body, format="json", HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 201, accepted.json()


def test_a_token_write_needs_no_csrf_token(alice, example_org):
    _, plaintext = ApiToken.issue(alice)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    response = client.post("/api/mailboxes/", {"address": "dave@example.org", "password": PASSWORD}, format="json")
    assert response.status_code == 201


def test_revokeapitoken_revokes_by_prefix_or_for_a_whole_account(alice, bob):
    first, first_plain = ApiToken.issue(alice, "one")
    _, second_plain = ApiToken.issue(alice, "two")
    _, bobs = ApiToken.issue(bob.user)
    out = io.StringIO()
    call_command("revokeapitoken", first.prefix, stdout=out)
    assert f"revoked {first.prefix}" in out.getvalue()
    assert bearer(first_plain).get("/api/domains/").status_code == 401
    assert bearer(second_plain).get("/api/domains/").status_code == 200
    call_command("revokeapitoken", "--account", "alice", stdout=io.StringIO())
    assert bearer(second_plain).get("/api/domains/").status_code == 401
    assert bearer(bobs).get("/api/mailboxes/").status_code == 200
    with pytest.raises(CommandError, match="no active token"):
        call_command("revokeapitoken", first.prefix)
