"""What each resource does, end to end through the API and back out of the models it wrote."""

from __future__ import annotations

from django.contrib.auth import authenticate

from delivery.models import MessageLog, QueuedMessage, QueuedRecipient
from domains.models import DkimKey, Domain
from domains.records import expected_records
from mailboxes.directory import Verdict, resolve
from mailboxes.models import Mailbox, RelayCredential, User
from mailboxes.provisioning import create_mailbox
from tests.support import PASSWORD

NEW_PASSWORD = "a brand new passphrase"


# Domains

def test_a_superadmin_adds_a_domain_by_its_unicode_name_and_it_gets_a_dkim_key(api, superadmin):
    response = api(superadmin).post("/api/domains/", {"name": "Bücher.example", "max_mailboxes": 5}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["unicode_name"], body["max_mailboxes"]) == ("xn--bcher-kva.example",
                                                                         "bücher.example", 5)
    assert Domain.objects.get(pk=body["id"]).active_dkim_key() is not None


def test_a_superadmin_suspends_a_domain_and_its_mail_is_refused(api, superadmin, bob, example_org):
    response = api(superadmin).patch(f"/api/domains/{example_org.pk}/", {"active": False}, format="json")
    assert (response.status_code, response.json()["active"]) == (200, False)
    assert resolve("bob@example.org").verdict == Verdict.DISABLED


def test_sending_limits_are_the_superadmins_for_a_domain_and_the_domain_admins_for_a_mailbox(
        api, superadmin, alice, example_org, bob):
    assert api(alice).patch(f"/api/domains/{example_org.pk}/", {"send_limit_per_hour": 10},
                            format="json").status_code == 403
    response = api(superadmin).patch(f"/api/domains/{example_org.pk}/", {"send_limit_per_hour": 10}, format="json")
    assert (response.status_code, response.json()["send_limit_per_hour"]) == (200, 10)
    response = api(alice).patch(f"/api/mailboxes/{bob.pk}/", {"send_limit_per_hour": 3}, format="json")
    assert (response.status_code, response.json()["send_limit_per_hour"]) == (200, 3)
    bob.refresh_from_db()
    assert bob.send_limit_per_hour == 3
    response = api(alice).patch(f"/api/mailboxes/{bob.pk}/", {"send_limit_per_hour": -1}, format="json")
    assert response.status_code == 400 and "send_limit_per_hour" in str(response.json())


def test_a_domain_admin_may_not_suspend_their_own_domain(api, alice, example_org):
    response = api(alice).patch(f"/api/domains/{example_org.pk}/", {"active": False}, format="json")
    assert (response.status_code, response.json()) == (403, {"detail": "Only a superadmin may do this."})
    example_org.refresh_from_db()
    assert example_org.active


def test_a_domain_with_mailboxes_is_not_deleted(api, superadmin, bob, example_org):
    response = api(superadmin).delete(f"/api/domains/{example_org.pk}/")
    assert response.status_code == 409
    assert "bob@example.org" in response.json()["detail"]
    assert Domain.objects.filter(pk=example_org.pk).exists()


def test_an_empty_domain_is_deleted(api, superadmin, other_test):
    assert api(superadmin).delete(f"/api/domains/{other_test.pk}/").status_code == 204
    assert not Domain.objects.filter(name="other.test").exists()


def test_the_records_endpoint_lists_what_the_wizard_expects(api, alice, example_org):
    response = api(alice).get(f"/api/domains/{example_org.pk}/records/")
    assert response.status_code == 200
    expected = expected_records(example_org)
    assert [(r["key"], r["owner"], r["type"], r["value"]) for r in response.json()] == [
        (r.key, r.owner, r.type, r.value) for r in expected]
    mx = response.json()[0]
    assert mx["zone_line"] == "example.org. 3600 IN MX 10 mail.mailhost.test."


# Mailboxes

def test_an_admin_creates_a_mailbox_that_can_log_in(api, alice, example_org):
    response = api(alice).post("/api/mailboxes/", {"address": "Dave@example.org", "password": PASSWORD,
                                                   "display_name": "Dave", "quota": 1024}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["address"], body["quota"], body["display_name"]) == ("dave@example.org", 1024, "Dave")
    assert "password" not in body
    assert authenticate(username="dave@example.org", password=PASSWORD) is not None


def test_an_admin_changes_quota_name_and_state_and_resets_the_password(api, alice, bob):
    response = api(alice).patch(f"/api/mailboxes/{bob.pk}/", {"quota": 2048, "display_name": "Robert",
                                                              "active": False, "password": NEW_PASSWORD},
                                format="json")
    assert response.status_code == 200
    bob.refresh_from_db()
    bob.user.refresh_from_db()
    assert (bob.quota, bob.display_name, bob.active) == (2048, "Robert", False)
    assert bob.user.check_password(NEW_PASSWORD)
    assert resolve("bob@example.org").verdict == Verdict.DISABLED


def test_deleting_a_mailbox_removes_its_login_but_keeps_its_mail_on_disk(api, alice, bob):
    bob.maildir.mkdir(parents=True)
    (bob.maildir / "keep").write_text("mail")
    assert api(alice).delete(f"/api/mailboxes/{bob.pk}/").status_code == 204
    assert not User.objects.filter(username="bob@example.org").exists()
    assert (bob.maildir / "keep").exists()


def test_the_mailbox_list_filters_by_domain(api, superadmin, bob, other_test):
    create_mailbox("zed@other.test", PASSWORD)
    client = api(superadmin)
    assert client.get("/api/mailboxes/").json()["count"] == 2
    listed = client.get(f"/api/mailboxes/?domain={other_test.pk}").json()["results"]
    assert [m["address"] for m in listed] == ["zed@other.test"]


# Aliases

def test_a_catch_all_alias_delivers_unknown_addresses_to_its_destination(api, alice, bob):
    response = api(alice).post("/api/aliases/", {"address": "@example.org", "destinations": ["bob@example.org"]},
                               format="json")
    assert response.status_code == 201
    assert response.json()["is_catch_all"] is True
    resolution = resolve("anything@example.org")
    assert resolution.verdict == Verdict.DELIVER
    assert [m.address for m in resolution.mailboxes] == ["bob@example.org"]


def test_an_alias_changes_destinations_and_can_be_deleted(api, alice, bob):
    client = api(alice)
    alias = client.post("/api/aliases/", {"address": "info@example.org", "destinations": ["bob@example.org"]},
                        format="json").json()
    changed = client.patch(f"/api/aliases/{alias['id']}/", {"destinations": ["Ext@Remote.test"]}, format="json")
    assert changed.json()["destinations"] == ["ext@remote.test"]
    assert client.delete(f"/api/aliases/{alias['id']}/").status_code == 204
    assert resolve("info@example.org").verdict == Verdict.UNKNOWN_USER


# Relay credentials

def test_a_relay_credentials_secret_is_shown_once_and_works(api, alice, example_org):
    client = api(alice)
    created = client.post("/api/relay-credentials/", {"domain": example_org.pk, "label": "crm",
                                                      "allowed_senders": ["@example.org"]}, format="json")
    assert created.status_code == 201
    body = created.json()
    secret = body["secret"]
    cred = RelayCredential.objects.get(pk=body["id"])
    assert body["login"] == cred.login and cred.login.endswith("@example.org")
    assert cred.check_secret(secret)
    for url in ("/api/relay-credentials/", f"/api/relay-credentials/{cred.pk}/"):
        text = client.get(url).content.decode()
        assert secret not in text and cred.secret_hash not in text and '"secret"' not in text


def test_an_app_password_logs_in_as_its_mailbox(api, alice, bob, example_org):
    body = api(alice).post("/api/relay-credentials/", {"domain": example_org.pk, "mailbox": bob.pk,
                                                       "label": "phone"}, format="json").json()
    assert body["login"] == "bob@example.org"
    assert RelayCredential.objects.get(pk=body["id"]).check_secret(body["secret"])


def test_a_revoked_relay_credential_no_longer_logs_in(api, alice, example_org):
    client = api(alice)
    body = client.post("/api/relay-credentials/", {"domain": example_org.pk, "label": "crm"}, format="json").json()
    revoked = client.post(f"/api/relay-credentials/{body['id']}/revoke/")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revoked_at"]
    assert not RelayCredential.objects.get(pk=body["id"]).check_secret(body["secret"])


# DKIM keys

def test_a_new_dkim_key_is_pending_and_its_private_key_is_never_shown(api, alice, example_org):
    client = api(alice)
    response = client.post("/api/dkim-keys/", {"domain": example_org.pk, "algorithm": "ed25519"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["state"], body["algorithm"]) == ("pending", "ed25519")
    assert body["txt_value"].startswith("v=DKIM1; k=ed25519; p=")
    assert example_org.active_dkim_key().selector != body["selector"]
    listing = client.get("/api/dkim-keys/")
    assert listing.json()["count"] == 2
    assert "PRIVATE KEY" not in listing.content.decode()
    assert DkimKey.objects.get(pk=body["id"]).private_key.startswith("-----BEGIN PRIVATE KEY")


# Message log and queue

def test_the_message_log_filters_by_direction_result_and_search(api, alice, example_org, other_test):
    rows = [("inbound", "accepted", "ann@remote.test", "Hello"), ("inbound", "refused", "spam@bad.test", "Win"),
            ("submission", "accepted", "bob@example.org", "Report")]
    for direction, result, sender, subject in rows:
        MessageLog.objects.create(domain=example_org, direction=direction, result=result, mail_from=sender,
                                  subject=subject)
    MessageLog.objects.create(domain=example_org, direction="submission", result="accepted", subject="Traced",
                              mail_from="bob@example.org", queue_id="0123456789ABCDEF")
    MessageLog.objects.create(domain=other_test, direction="inbound", result="accepted", mail_from="ann@remote.test",
                              queue_id="FEDCBA9876543210")
    client = api(alice)

    def subjects(query):
        return sorted(r["subject"] for r in client.get(f"/api/message-log/{query}").json()["results"])

    assert subjects("") == ["Hello", "Report", "Traced", "Win"]
    assert subjects("?direction=inbound") == ["Hello", "Win"]
    assert subjects("?direction=inbound&result=refused") == ["Win"]
    assert subjects("?search=REMOTE.test") == ["Hello"]
    assert subjects("?search=0123456789abcdef") == ["Traced"]     # a queue id, in either case
    assert subjects("?search=FEDCBA9876543210") == []              # another tenant's
    page = client.get("/api/message-log/?limit=2").json()
    assert (page["count"], len(page["results"])) == (4, 2)
    assert "offset=2" in page["next"]


def test_the_queue_lists_recipients_of_the_tenants_own_mail_without_the_message_bytes(api, alice, example_org,
                                                                                   other_test):
    ours = QueuedMessage.objects.create(sender="bob@example.org", data=b"Subject: secret\r\n\r\nbody\r\n",
                                        sender_domain=example_org)
    QueuedRecipient.objects.create(message=ours, address="ann@remote.test", domain="remote.test",
                                   state="deferred", attempts=2, last_reply="451 4.7.1 try later")
    theirs = QueuedMessage.objects.create(sender="c@other.test", data=b"x", sender_domain=other_test)
    QueuedRecipient.objects.create(message=theirs, address="z@remote.test", domain="remote.test")
    client = api(alice)
    rows = client.get("/api/queue/").json()["results"]
    assert [(r["queue_id"], r["address"], r["state"], r["attempts"]) for r in rows] == [
        (ours.queue_id, "ann@remote.test", "deferred", 2)]
    assert "body" not in client.get("/api/queue/").content.decode()
    assert client.get("/api/queue/?state=queued").json()["count"] == 0


def test_mailbox_objects_stay_as_the_provisioning_module_made_them(api, alice, example_org):
    """The API creates through create_mailbox: the stored row is the same as from the command."""
    api(alice).post("/api/mailboxes/", {"address": "Erin@EXAMPLE.org", "password": PASSWORD}, format="json")
    mailbox = Mailbox.objects.get(local_part="erin")
    assert (mailbox.address, mailbox.quota, mailbox.user.username) == ("erin@example.org",
                                                                       example_org.default_quota,
                                                                       "erin@example.org")


def test_suppressions_are_listed_per_domain_and_deleting_one_lifts_it(api, alice, charlie, example_org, other_test):
    import datetime as dt

    from django.utils import timezone

    from delivery.models import Suppression

    until = timezone.now() + dt.timedelta(days=30)
    gone = Suppression.objects.create(domain=example_org, address="gone@remote.test", reason="550 5.1.1",
                                      expires_at=until)
    Suppression.objects.create(domain=example_org, address="lapsed@remote.test",
                               expires_at=timezone.now() - dt.timedelta(days=1))
    Suppression.objects.create(domain=other_test, address="theirs@remote.test", expires_at=until)
    listed = api(alice).get("/api/suppressions/").json()
    assert [(r["domain"], r["address"]) for r in listed["results"]] == [("example.org", "gone@remote.test")]
    assert api(charlie).delete(f"/api/suppressions/{gone.pk}/").status_code == 404
    assert api(alice).delete(f"/api/suppressions/{gone.pk}/").status_code == 204
    assert not Suppression.objects.filter(pk=gone.pk).exists()


def test_a_deferred_message_is_retried_now_through_the_api(api, alice, charlie, example_org):
    import datetime as dt

    from django.utils import timezone

    from delivery.models import QueuedMessage, QueuedRecipient

    message = QueuedMessage.objects.create(sender="bob@example.org", data=b"x", sender_domain=example_org)
    row = QueuedRecipient.objects.create(message=message, address="friend@remote.test", domain="remote.test",
                                         state="deferred", next_attempt_at=timezone.now() + dt.timedelta(hours=2))
    assert api(charlie).post(f"/api/queue/{row.pk}/retry/").status_code == 404
    response = api(alice).post(f"/api/queue/{row.pk}/retry/")
    assert response.status_code == 200 and response.json()["state"] == "queued"
    row.refresh_from_db()
    assert row.next_attempt_at <= timezone.now()


def test_a_domain_admin_manages_webhooks_and_a_bad_url_is_a_json_400(api, alice, charlie, example_org):
    from delivery.models import Webhook

    client = api(alice)
    bad = client.post("/api/webhooks/", {"domain": example_org.pk, "url": "http://hooks.example.net/x",
                                         "events": ["delivered"]}, format="json")
    assert bad.status_code == 400 and "https://" in str(bad.json()["url"])
    none = client.post("/api/webhooks/", {"domain": example_org.pk, "url": "https://hooks.example.net/x",
                                          "events": []}, format="json")
    assert none.status_code == 400 and "events" in none.json()
    created = client.post("/api/webhooks/", {"domain": example_org.pk, "url": "https://hooks.example.net/x",
                                             "events": ["bounced", "delivered"]}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["events"] == ["bounced", "delivered"] and body["secret"] == Webhook.objects.get().secret
    assert api(charlie).get(f"/api/webhooks/{body['id']}/").status_code == 404
    assert api(charlie).post("/api/webhooks/", {"domain": example_org.pk, "url": "https://evil.example/x",
                                                "events": ["delivered"]}, format="json").status_code == 400
    changed = client.patch(f"/api/webhooks/{body['id']}/", {"events": ["expired"], "active": False}, format="json")
    assert (changed.json()["events"], changed.json()["active"]) == (["expired"], False)
    assert client.get("/api/webhooks/", {"domain": example_org.pk}).json()["count"] == 1
    assert client.delete(f"/api/webhooks/{body['id']}/").status_code == 204
    assert not Webhook.objects.exists()
