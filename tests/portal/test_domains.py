"""Domain pages: create, suspend, delete with confirmation, admins, alias domains, DKIM rotation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from domains.models import DkimKey, Domain, DomainAlias
from mailboxes.models import Mailbox, User
from portal.models import AuditLog


@pytest.fixture
def root_client(client, superadmin):
    client.force_login(superadmin)
    return client


def test_the_superadmin_adds_a_domain_and_sees_its_records(root_client, superadmin):
    response = root_client.post(reverse("domains:create"), {
        "name": "Bücher.Example", "max_mailboxes": 10, "max_aliases": 0, "default_quota": "1G", "max_quota": "0",
    }, REMOTE_ADDR="192.0.2.7")
    domain = Domain.objects.get(name="xn--bcher-kva.example")
    assert response.url == reverse("domains:detail", kwargs={"pk": domain.pk})
    page = root_client.get(response.url).content.decode()
    assert "bücher.example" in page and "10 mail.mailhost.test" in page and "v=DKIM1" in page
    assert f"/domains/{domain.pk}/dns/" in page
    row = AuditLog.objects.get(action="domain.create")
    assert (row.actor, row.domain, row.ip) == (superadmin, domain, "192.0.2.7")


@pytest.mark.parametrize("name, error", [("not a domain", "space"), ("example.org", "already hosted")])
def test_a_bad_or_duplicate_domain_name_is_shown_as_a_form_error(root_client, example_org, name, error):
    response = root_client.post(reverse("domains:create"), {
        "name": name, "max_mailboxes": 0, "max_aliases": 0, "default_quota": "1G", "max_quota": "0"})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert Domain.objects.count() == 1


def test_a_bad_quota_is_a_form_error(root_client):
    response = root_client.post(reverse("domains:create"), {
        "name": "new.test", "max_mailboxes": 0, "max_aliases": 0, "default_quota": "lots", "max_quota": "0"})
    assert "is not a number" in response.content.decode()


def test_suspending_and_resuming_a_domain_is_audited(root_client, example_org):
    url = reverse("domains:suspend", kwargs={"pk": example_org.pk})
    root_client.post(url)
    example_org.refresh_from_db()
    assert not example_org.active
    root_client.post(url)
    example_org.refresh_from_db()
    assert example_org.active
    assert list(AuditLog.objects.order_by("id").values_list("action", flat=True)) == ["domain.suspend",
                                                                                       "domain.resume"]


def test_the_superadmin_changes_a_domains_limits_and_a_contradiction_is_an_error(root_client, example_org):
    url = reverse("domains:limits", kwargs={"pk": example_org.pk})
    bad = root_client.post(url, {"max_mailboxes": 5, "max_aliases": 0, "default_quota": "2G", "max_quota": "1G"})
    assert "default quota exceeds the maximum quota" in bad.content.decode()
    root_client.post(url, {"max_mailboxes": 5, "max_aliases": 0, "default_quota": "500M", "max_quota": "1G"})
    example_org.refresh_from_db()
    assert (example_org.max_mailboxes, example_org.default_quota) == (5, 500 * 1024**2)
    assert AuditLog.objects.get(action="domain.limits").detail == "max_mailboxes, default_quota, max_quota"


def test_the_superadmin_caps_what_a_whole_domain_may_send_an_hour(root_client, example_org):
    url = reverse("domains:limits", kwargs={"pk": example_org.pk})
    root_client.post(url, {"max_mailboxes": 0, "max_aliases": 0, "default_quota": "1G", "max_quota": "0",
                           "send_limit_per_hour": 5000})
    example_org.refresh_from_db()
    assert example_org.send_limit_per_hour == 5000


def test_deleting_a_domain_needs_its_name_typed(root_client, example_org, bob):
    url = reverse("domains:delete", kwargs={"pk": example_org.pk})
    assert "1 mailbox" in root_client.get(url).content.decode()
    response = root_client.post(url, {"confirm": "other.test"})
    assert "type example.org exactly" in response.content.decode()
    assert Domain.objects.filter(pk=example_org.pk).exists()
    assert root_client.post(url, {"confirm": "example.org"}).url == reverse("domains:list")
    assert not Domain.objects.filter(pk=example_org.pk).exists()
    assert not User.objects.filter(username="bob@example.org").exists()
    assert AuditLog.objects.get(action="domain.delete").domain_name == "example.org"


def test_the_superadmin_assigns_and_removes_a_domain_admin(root_client, example_org, charlie):
    url = reverse("domains:admins", kwargs={"pk": example_org.pk})
    assert "no account" in root_client.post(url, {"account": "nobody"}).content.decode()
    root_client.post(url, {"account": "charlie"})
    assert example_org.admins.filter(pk=charlie.pk).exists()
    root_client.post(reverse("domains:admin_remove", kwargs={"pk": example_org.pk, "user_pk": charlie.pk}))
    assert not example_org.admins.filter(pk=charlie.pk).exists()
    assert AuditLog.objects.filter(action__in=["domain.admin_add", "domain.admin_remove"]).count() == 2


def test_a_domain_admin_lists_only_their_domains_with_mailbox_counts(client, alice, other_test, bob):
    client.force_login(alice)
    response = client.get(reverse("domains:list"))
    page = response.content.decode()
    assert "example.org" in page and "other.test" not in page
    assert [d.mailbox_count for d in response.context["page"]] == [1]


def test_domain_list_search_finds_by_name(root_client, example_org, other_test):
    page = root_client.get(reverse("domains:list"), {"q": "OTHER"}).content.decode()
    assert "other.test" in page and "example.org" not in page


def test_an_admin_adds_an_alias_domain_and_a_hosted_name_is_refused(client, alice, example_org, other_test):
    client.force_login(alice)
    url = reverse("domains:alias_domains", kwargs={"pk": example_org.pk})
    assert "already a hosted domain" in client.post(url, {"name": "other.test"}).content.decode()
    client.post(url, {"name": "example.net"})
    alias = DomainAlias.objects.get(name="example.net")
    assert alias.target == example_org
    client.post(reverse("domains:alias_domain_delete", kwargs={"pk": example_org.pk, "alias_pk": alias.pk}))
    assert not DomainAlias.objects.exists()


class TestDkimRotation:
    @pytest.fixture
    def new_key(self, client, alice, example_org):
        client.force_login(alice)
        client.post(reverse("domains:dkim", kwargs={"pk": example_org.pk}), {"algorithm": "ed25519"})
        return example_org.dkim_keys.get(state=DkimKey.State.PENDING)

    def _activate(self, client, key):
        return client.post(reverse("domains:dkim_activate", kwargs={"pk": key.domain_id, "key_pk": key.pk}),
                           follow=True).content.decode()

    def test_a_new_key_is_pending_and_the_old_one_keeps_signing(self, new_key, example_org):
        assert example_org.active_dkim_key() != new_key
        assert AuditLog.objects.filter(action="dkim.generate").exists()

    def test_a_key_not_yet_in_dns_is_not_activated(self, client, new_key, dns_server):
        dns_server.zone("example.org", "@ IN MX 10 mail.mailhost.test.")
        page = self._activate(client, new_key)
        assert "does not exist in DNS yet" in page
        new_key.refresh_from_db()
        assert new_key.state == DkimKey.State.PENDING

    def test_a_key_published_with_another_value_is_not_activated(self, client, new_key, dns_server):
        dns_server.zone("example.org", f'{new_key.selector}._domainkey IN TXT "v=DKIM1; k=ed25519; p=AAAA"')
        assert "does not carry this key" in self._activate(client, new_key)

    def test_a_published_key_is_activated_and_signs_and_the_old_one_is_retired_later(
            self, client, new_key, example_org, dns_server):
        old = example_org.active_dkim_key()
        dns_server.zone("example.org", f'{new_key.selector}._domainkey IN TXT "{new_key.txt_value}"')
        self._activate(client, new_key)
        assert example_org.active_dkim_key() == new_key
        old.refresh_from_db()
        assert old.state == DkimKey.State.ACTIVE  # still published: mail signed with it is in flight
        retire = reverse("domains:dkim_retire", kwargs={"pk": example_org.pk, "key_pk": new_key.pk})
        assert "this key signs" in client.post(retire, follow=True).content.decode()
        client.post(reverse("domains:dkim_retire", kwargs={"pk": example_org.pk, "key_pk": old.pk}))
        old.refresh_from_db()
        assert old.state == DkimKey.State.RETIRED
        assert AuditLog.objects.filter(action__in=["dkim.activate", "dkim.retire"]).count() == 2


def test_a_domain_admin_sees_the_counts_on_the_dashboard(client, alice, bob):
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "example.org" in page
    assert Mailbox.objects.count() == 1
