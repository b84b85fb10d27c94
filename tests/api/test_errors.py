"""Every error is JSON and names the problem; a refused request writes nothing."""

from __future__ import annotations

import pytest

from mailboxes.models import Alias, Mailbox, RelayCredential, User
from mailhost.addresses import AddressError, parse_address
from tests.support import PASSWORD


def address_error(address: str) -> str:
    with pytest.raises(AddressError) as caught:
        parse_address(address, allow_subaddress=False)
    return str(caught.value)


@pytest.mark.parametrize("address", ["a/../b@example.org", "x%y@example.org", "bob@[127.0.0.1]", "a@b@example.org"])
def test_a_mailbox_with_a_bad_address_is_refused_with_the_address_rules_message(api, alice, address, mail_root):
    users, mailboxes = User.objects.count(), Mailbox.objects.count()
    response = api(alice).post("/api/mailboxes/", {"address": address, "password": PASSWORD}, format="json")
    assert response.status_code == 400
    assert response.json() == {"address": [address_error(address)]}
    assert (User.objects.count(), Mailbox.objects.count()) == (users, mailboxes)
    assert not mail_root.exists() or not any(mail_root.rglob("*"))


def test_a_short_password_is_refused_on_the_password_field(api, alice, mail_root):
    response = api(alice).post("/api/mailboxes/", {"address": "dave@example.org", "password": "short"},
                               format="json")
    assert response.status_code == 400
    assert "at least 8 characters" in response.json()["password"][0]
    assert not User.objects.filter(username="dave@example.org").exists()


def test_missing_fields_are_named(api, alice):
    response = api(alice).post("/api/mailboxes/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"address", "password"}


def test_a_duplicate_mailbox_is_refused_in_the_words_of_the_provisioning_module(api, alice, bob):
    response = api(alice).post("/api/mailboxes/", {"address": "BOB@example.org", "password": PASSWORD},
                               format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": ["bob@example.org already exists"]}


def test_a_mailbox_in_another_tenants_domain_reads_like_one_in_no_domain_at_all(api, charlie, example_org):
    client = api(charlie)
    theirs = client.post("/api/mailboxes/", {"address": "eve@example.org", "password": PASSWORD}, format="json")
    nowhere = client.post("/api/mailboxes/", {"address": "eve@nowhere.test", "password": PASSWORD},
                          format="json")
    assert theirs.status_code == nowhere.status_code == 400
    assert theirs.json() == {"address": ["example.org is not a domain you administer."]}
    assert nowhere.json() == {"address": ["nowhere.test is not a domain you administer."]}
    assert not User.objects.filter(username="eve@example.org").exists()


def test_a_quota_above_the_domains_maximum_is_refused_on_the_quota_field(api, alice, bob, example_org):
    example_org.max_quota = 1000
    example_org.save()
    response = api(alice).patch(f"/api/mailboxes/{bob.pk}/", {"quota": 5000}, format="json")
    assert response.status_code == 400
    assert response.json() == {"quota": ["quota exceeds the domain's maximum"]}
    bob.refresh_from_db()
    assert bob.quota != 5000


def test_an_alias_with_a_bad_destination_names_the_destination(api, alice, example_org):
    response = api(alice).post("/api/aliases/", {"address": "info@example.org", "destinations": ["x!y@remote.test"]},
                               format="json")
    assert response.status_code == 400
    assert "'!' (bang-path routing)" in response.json()["destinations"][0]
    assert not Alias.objects.exists()


def test_a_relay_credential_with_a_bad_sender_names_it(api, alice, example_org):
    response = api(alice).post("/api/relay-credentials/",
                               {"domain": example_org.pk, "label": "crm", "allowed_senders": ["@bad..domain"]},
                               format="json")
    assert response.status_code == 400
    assert "'@bad..domain'" in response.json()["allowed_senders"][0]
    assert not RelayCredential.objects.exists()


def test_another_tenants_domain_id_is_refused_like_a_missing_one(api, charlie, example_org):
    response = api(charlie).post("/api/dkim-keys/", {"domain": example_org.pk}, format="json")
    assert response.status_code == 400
    assert response.json() == {"domain": [f'Invalid pk "{example_org.pk}" - object does not exist.']}
    assert example_org.dkim_keys.count() == 1


def test_a_bad_domain_name_is_refused_on_the_name_field(api, superadmin):
    response = api(superadmin).post("/api/domains/", {"name": "exa mple.org"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"name": ["domain contains a space"]}


def test_an_unknown_filter_value_is_a_400_naming_the_parameter(api, alice):
    response = api(alice).get("/api/message-log/?direction=sideways")
    assert response.status_code == 400
    assert "direction" in response.json()


def test_not_found_unknown_paths_wrong_methods_and_media_types_are_json(api, alice, bob):
    client = api(alice)
    assert client.get("/api/mailboxes/999999/").json() == {"detail": "Not found."}
    missing = client.get("/api/no-such-thing/")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not found."})
    slashless = client.post("/api/mailboxes", {"address": "x@example.org"}, format="json")
    assert slashless.json() == {"detail": "Not found. Did you mean /api/mailboxes/ (with the trailing slash)?"}
    put = client.put(f"/api/mailboxes/{bob.pk}/", {"quota": 1}, format="json")
    assert (put.status_code, put.json()) == (405, {"detail": 'Method "PUT" not allowed.'})
    form = client.post("/api/mailboxes/", {"address": "x@example.org"})  # multipart, not JSON
    assert form.status_code == 415
    assert "Unsupported media type" in form.json()["detail"]
    broken = client.generic("POST", "/api/mailboxes/", "{not json", content_type="application/json")
    assert broken.status_code == 400
    assert "JSON parse error" in broken.json()["detail"]


def test_a_bug_is_a_json_500_never_an_html_page(api, alice, example_org, settings, monkeypatch):
    settings.DEBUG = False

    def broken(domain):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("api.views.expected_records", broken)
    response = api(alice).get(f"/api/domains/{example_org.pk}/records/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal server error."}



def test_an_error_in_one_list_item_is_a_flat_message_naming_the_item(client, alice):
    from api.models import ApiToken

    _, token = ApiToken.issue(alice, "t")
    response = client.post("/api/aliases/", {"address": "x@example.org", "destinations": ["ok@remote.test", "a\x00b"]},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    errors = response.json()["destinations"]
    assert all(isinstance(message, str) for message in errors)
    assert any(message.startswith("item 1: ") for message in errors), errors
