"""A domain admin's mailbox, alias, relay credential and CSV pages."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import authenticate
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from mailboxes.models import Alias, Mailbox, RelayCredential, User
from portal.models import AuditLog


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def url(name, domain, **kw):
    return reverse(name, kwargs={"pk": domain.pk, **kw})


def test_an_admin_creates_a_mailbox_that_can_log_in(admin_client, example_org, alice):
    response = admin_client.post(url("mailboxes:create", example_org), {
        "local_part": "Carol", "display_name": "Carol", "quota": "500M",
        "password1": "a long password", "password2": "a long password"}, REMOTE_ADDR="192.0.2.9")
    assert response.url == url("mailboxes:list", example_org)
    mailbox = Mailbox.objects.get(local_part="carol")
    assert mailbox.quota == 500 * 1024**2
    assert authenticate(username="carol@example.org", password="a long password") == mailbox.user
    row = AuditLog.objects.get(action="mailbox.create")
    assert (row.actor, row.domain, row.object_repr, row.ip) == (alice, example_org, "carol@example.org", "192.0.2.9")


@pytest.mark.parametrize("data, error", [
    ({"local_part": "carol", "password1": "short", "password2": "short"}, "at least 8 characters"),
    ({"local_part": "carol", "password1": "a long password", "password2": "another one"}, "The two passwords differ"),
    ({"local_part": "bob", "password1": "a long password", "password2": "a long password"}, "already exists"),
    ({"local_part": "a%b", "password1": "a long password", "password2": "a long password"}, "percent-hack"),
    ({"local_part": "sales", "password1": "a long password", "password2": "a long password"}, "already an alias"),
])
def test_mailbox_form_errors_are_shown_and_nothing_is_created(admin_client, example_org, bob, data, error):
    Alias.objects.create(domain=example_org, local_part="sales", destinations=["bob@example.org"])
    response = admin_client.post(url("mailboxes:create", example_org), data)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert Mailbox.objects.count() == 1


def test_a_quota_above_the_domains_maximum_is_refused(admin_client, example_org, bob):
    example_org.max_quota = 1024**3
    example_org.save()
    response = admin_client.post(url("mailboxes:edit", example_org, mailbox_pk=bob.pk),
                                 {"display_name": "Bob", "quota": "2G", "forward_to": "", "forward_keep_copy": "on"})
    assert "quota exceeds the domain&#x27;s maximum" in response.content.decode()


def test_an_admin_resets_a_password_suspends_and_deletes_a_mailbox(admin_client, example_org, bob):
    admin_client.post(url("mailboxes:password", example_org, mailbox_pk=bob.pk),
                      {"password1": "brand new secret", "password2": "brand new secret"})
    assert authenticate(username="bob@example.org", password="brand new secret") is not None
    admin_client.post(url("mailboxes:suspend", example_org, mailbox_pk=bob.pk))
    bob.refresh_from_db()
    assert not bob.active
    admin_client.post(url("mailboxes:delete", example_org, mailbox_pk=bob.pk))
    assert not User.objects.filter(username="bob@example.org").exists()
    assert set(AuditLog.objects.values_list("action", flat=True)) == {
        "mailbox.password_reset", "mailbox.suspend", "mailbox.delete"}


def test_an_admin_sets_forwarding_for_a_mailbox(admin_client, example_org, bob):
    admin_client.post(url("mailboxes:edit", example_org, mailbox_pk=bob.pk),
                      {"display_name": "Bob", "quota": "1G", "forward_to": "Bob@Remote.Test\nx@remote.test"})
    bob.refresh_from_db()
    assert bob.forward_to == ["bob@remote.test", "x@remote.test"] and not bob.forward_keep_copy


def test_an_admin_makes_an_alias_and_a_catch_all(admin_client, example_org, bob):
    admin_client.post(url("mailboxes:alias_create", example_org),
                      {"local_part": "info", "destinations": "bob@example.org, someone@remote.test"})
    admin_client.post(url("mailboxes:alias_create", example_org), {"local_part": "", "destinations": "bob@example.org"})
    aliases = {a.local_part: a.destinations for a in Alias.objects.all()}
    assert aliases == {"info": ["bob@example.org", "someone@remote.test"], "": ["bob@example.org"]}
    page = admin_client.get(url("mailboxes:aliases", example_org)).content.decode()
    assert "catch-all" in page


def test_alias_form_errors_are_shown(admin_client, example_org, bob):
    response = admin_client.post(url("mailboxes:alias_create", example_org),
                                 {"local_part": "bob", "destinations": "nobody@"})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    response = admin_client.post(url("mailboxes:alias_create", example_org),
                                 {"local_part": "bob", "destinations": "x@remote.test"})
    assert "already a mailbox" in response.content.decode()
    assert not Alias.objects.exists()


def test_a_relay_secret_is_shown_once_and_only_its_hash_is_kept(admin_client, example_org):
    response = admin_client.post(url("mailboxes:relay", example_org),
                                 {"label": "web shop", "allowed_senders": "@example.org"})
    cred = RelayCredential.objects.get(label="web shop")
    page = response.content.decode()
    secret = page.split('<span class="secret">')[2].split("</span>")[0]
    assert cred.check_secret(secret) and secret not in cred.secret_hash
    assert "shown only this once" in page
    assert secret not in admin_client.get(url("mailboxes:relay", example_org)).content.decode()
    admin_client.post(url("mailboxes:relay_revoke", example_org, cred_pk=cred.pk))
    cred.refresh_from_db()
    assert not cred.check_secret(secret)
    assert AuditLog.objects.filter(action__in=["relay.issue", "relay.revoke"]).count() == 2


def test_a_relay_credential_with_a_bad_sender_is_a_form_error(admin_client, example_org):
    response = admin_client.post(url("mailboxes:relay", example_org), {"label": "x", "allowed_senders": "not an@"})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert not RelayCredential.objects.exists()


CSV = (
    "address,password,quota,display_name\n"
    "carol,a long password,,Carol\n"
    "dave@example.org,short,,Dave\n"
    "eve@other.test,a long password,,Eve\n"
    "frank@example.org,a long password,5G5,Frank\n"
    "\n"
    "grace@EXAMPLE.org,a long password,100M,Grace\n"
)


def test_csv_import_creates_good_rows_and_reports_each_bad_row_by_line(admin_client, example_org, other_test):
    response = admin_client.post(url("mailboxes:import", example_org), {
        "kind": "mailboxes", "file": SimpleUploadedFile("m.csv", CSV.encode())})
    page = response.content.decode()
    assert set(Mailbox.objects.values_list("local_part", flat=True)) == {"carol", "grace"}
    results = {r.line: r for r in response.context["results"]}
    assert results[2].ok and results[7].ok
    assert "at least 8 characters" in results[3].message
    assert "other.test is not example.org" in results[4].message
    assert "is not a number" in results[5].message
    assert "Result: 5 rows" in page
    assert AuditLog.objects.get(action="csv.import_mailboxes").detail == "2/5 rows"


def test_csv_import_in_chunks_answers_json_with_line_numbers(admin_client, example_org, bob):
    response = admin_client.post(url("mailboxes:import", example_org), {
        "kind": "aliases", "chunk": "info,bob@example.org x@remote.test\n@example.org,bob@example.org\nbob,x@r.test",
        "first_line": 51}, HTTP_ACCEPT="application/json")
    results = json.loads(response.content)["results"]
    assert [(r["line"], r["ok"]) for r in results] == [(51, True), (52, True), (53, False)]
    assert Alias.objects.get(local_part="").destinations == ["bob@example.org"]


def test_csv_import_of_a_non_utf8_file_is_a_clear_error(admin_client, example_org):
    response = admin_client.post(url("mailboxes:import", example_org), {
        "kind": "mailboxes", "file": SimpleUploadedFile("m.csv", "zoë,pässwörd".encode("latin-1"))})
    assert "not UTF-8" in response.content.decode()


def test_csv_export_lists_the_domains_mailboxes_and_aliases(admin_client, example_org, bob):
    Alias.objects.create(domain=example_org, local_part="", destinations=["bob@example.org"])
    mailboxes = b"".join(admin_client.get(url("mailboxes:export_mailboxes", example_org)).streaming_content).decode()
    assert mailboxes.splitlines() == ["address,display_name,quota,used_bytes,active", "bob@example.org,Bob,1G,0,True"]
    aliases = b"".join(admin_client.get(url("mailboxes:export_aliases", example_org)).streaming_content).decode()
    assert aliases.splitlines()[1] == "@example.org,bob@example.org"


def test_an_exported_alias_file_imports_again(admin_client, example_org, bob):
    admin_client.post(url("mailboxes:alias_create", example_org),
                      {"local_part": "info", "destinations": "bob@example.org"})
    exported = b"".join(admin_client.get(url("mailboxes:export_aliases", example_org)).streaming_content)
    Alias.objects.all().delete()
    admin_client.post(url("mailboxes:import", example_org), {"kind": "aliases",
                                                             "file": SimpleUploadedFile("a.csv", exported)})
    assert Alias.objects.get().destinations == ["bob@example.org"]


def test_an_admin_limits_how_many_recipients_a_mailbox_may_send_to_an_hour(admin_client, example_org, bob):
    admin_client.post(url("mailboxes:edit", example_org, mailbox_pk=bob.pk),
                      {"display_name": "Bob", "quota": "1G", "forward_to": "", "send_limit_per_hour": "200"})
    bob.refresh_from_db()
    assert bob.send_limit_per_hour == 200
    page = admin_client.get(url("mailboxes:edit", example_org, mailbox_pk=bob.pk)).content.decode()
    assert "Recipients per hour" in page
    admin_client.post(url("mailboxes:edit", example_org, mailbox_pk=bob.pk),
                      {"display_name": "Bob", "quota": "1G", "forward_to": "", "send_limit_per_hour": ""})
    bob.refresh_from_db()
    assert bob.send_limit_per_hour is None
