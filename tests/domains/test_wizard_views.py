"""The DNS wizard's pages: alice walks example.org through them; charlie, who administers
other.test, gets 404 for every one of example.org's wizard URLs, whatever the method."""

import pytest
from django.test import Client
from django.urls import reverse

from domains.models import DnsCheck
from tests.domains.dns_fixtures import published_zone
from tests.support import PASSWORD

pytestmark = pytest.mark.django_db

WIZARD_URLS = ["start", "ownership", "verify", "records", "zone", "check"]


def login(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def url(name: str, domain) -> str:
    return reverse(f"dnswizard:{name}", kwargs={"pk": domain.pk})


@pytest.mark.parametrize("name", WIZARD_URLS)
@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_charlie_gets_404_on_every_wizard_url_of_example_org(charlie, example_org, name, method):
    response = getattr(login(charlie), method)(url(name, example_org))
    assert response.status_code == 404
    assert not DnsCheck.objects.exists()


@pytest.mark.parametrize("name", WIZARD_URLS)
def test_an_anonymous_visitor_is_sent_to_the_login_page(example_org, name):
    response = Client().get(url(name, example_org))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_bob_mailbox_user_is_no_admin_and_gets_404(bob, example_org):
    assert login(bob.user).get(url("records", example_org)).status_code == 404


def test_the_wrong_method_on_alices_own_domain_is_405(alice, example_org):
    client = login(alice)
    assert client.get(url("verify", example_org)).status_code == 405
    assert client.post(url("records", example_org)).status_code == 405


def test_alice_sees_the_steps_and_the_ownership_token(alice, example_org):
    client = login(alice)
    start = client.get(url("start", example_org))
    assert start.status_code == 200 and b"DNS setup for example.org" in start.content
    page = client.get(url("ownership", example_org)).content.decode()
    assert "_mailhost.example.org" in page
    assert f'data-copy="mailhost-verification={example_org.ownership_token}"' in page
    assert "Not verified yet" in page


def test_the_records_page_lists_every_expected_record_with_a_copy_button(alice, example_org):
    page = login(alice).get(url("records", example_org)).content.decode()
    key = example_org.active_dkim_key()
    assert 'data-copy="10 mail.mailhost.test"' in page
    assert 'data-copy="v=spf1 mx ip4:127.0.0.1 -all"' in page
    assert f'data-copy="{key.txt_value}"' in page
    assert f"{key.selector}._domainkey.example.org" in page
    assert url("zone", example_org) in page


def test_the_zone_file_downloads_as_bind_lines(alice, example_org):
    response = login(alice).get(url("zone", example_org))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="example.org.zone"'
    lines = response.content.decode().splitlines()
    assert "example.org. 3600 IN MX 10 mail.mailhost.test." in lines
    assert "mail.mailhost.test. 3600 IN A 127.0.0.1" in lines


def test_verify_sets_ownership_only_once_the_token_is_published(checker_dns, alice, example_org):
    client = login(alice)
    checker_dns.zone("example.org", *[line for line in published_zone(example_org) if "_mailhost" not in line])
    response = client.post(url("verify", example_org), follow=True)
    assert "Not verified yet: found (no TXT record)" in response.content.decode()
    example_org.refresh_from_db()
    assert example_org.ownership_verified_at is None
    checker_dns.zone("example.org", *published_zone(example_org))
    response = client.post(url("verify", example_org), follow=True)
    assert "Ownership of example.org is verified." in response.content.decode()
    example_org.refresh_from_db()
    assert example_org.ownership_verified_at is not None
    row = DnsCheck.objects.get(domain=example_org)
    assert (row.key, row.status, row.changed, row.previous_status) == ("ownership", "ok", True, "warning")


def test_check_now_stores_and_shows_each_verdict_and_flags_a_change(checker_dns, alice, example_org):
    client = login(alice)
    before = client.get(url("check", example_org)).content.decode()
    assert "Not checked yet." in before and 'class="status pending"' in before

    checker_dns.zone("example.org", *published_zone(example_org))
    response = client.post(url("check", example_org))
    assert response.status_code == 302 and response["Location"] == url("check", example_org)
    page = client.get(url("check", example_org)).content.decode()
    assert "Last checked" in page and "Changed since the previous check" not in page
    assert 'id="check-mx" class="status-ok"' in page and "10 mail.mailhost.test" in page

    checker_dns.zone("example.org", *[line for line in published_zone(example_org) if "_dmarc" not in line])
    page = client.post(url("check", example_org), follow=True).content.decode()
    assert "Some required records are wrong or missing." in page
    assert 'id="check-dmarc" class="status-error changed"' in page
    assert "Changed since the previous check:\n      dmarc (ok → error)" in page
    assert "(no DMARC record)" in page and "Publish _dmarc.example.org TXT v=DMARC1; p=quarantine" in page


def test_post_actions_need_the_csrf_token(alice, example_org):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(url("check", example_org)).status_code == 403
    assert client.post(url("verify", example_org)).status_code == 403


def test_a_superadmin_reaches_any_domains_wizard(superadmin, other_test):
    assert login(superadmin).get(url("records", other_test)).status_code == 200
