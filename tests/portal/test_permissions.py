"""The permission matrix: every portal URL x every role x another tenant's object.

The URL list is checked against Django's resolver, so a new portal URL cannot be added without a
row here. Roles: anonymous, superadmin, alice (admin of example.org), charlie (admin of
other.test), bob (mailbox user in example.org). Another tenant's object is always a 404, for GET
and POST alike, and so is a URL mixing one's own domain with another tenant's object id.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from mailboxes.models import RelayCredential

# scope: who may use the URL. public | user | admin | superadmin | domain | domain_super | mailbox
# kwargs: which objects of the target tenant the URL names.
# get: the status an allowed role gets for GET (405: the URL only takes POST).
MATRIX = {
    "portal:login": ("public", [], 200),
    "portal:login_verify": ("public", [], 302),
    "portal:logout": ("public", [], 405),
    "portal:dashboard": ("user", [], {"bob": 302, "*": 200}),  # a mailbox user lands on /me/
    "portal:otp_setup": ("admin", [], 200),
    "portal:otp_disable": ("admin", [], 405),
    "portal:audit": ("admin", [], 200),
    "domains:list": ("admin", [], 200),
    "domains:create": ("superadmin", [], 200),
    "delivery:log": ("superadmin", [], 200),
    "delivery:queue": ("superadmin", [], 200),
    "delivery:global_queue_retry": ("superadmin", [("message_pk", "queued")], 405),
    "delivery:global_queue_delete": ("superadmin", [("message_pk", "queued")], 405),
    "domains:detail": ("domain", [], 200),
    "domains:suspend": ("domain_super", [], 405),
    "domains:limits": ("domain_super", [], 200),
    "domains:delete": ("domain_super", [], 200),
    "domains:admins": ("domain_super", [], 200),
    "domains:admin_remove": ("domain_super", [("user_pk", "admin")], 405),
    "domains:alias_domains": ("domain", [], 200),
    "domains:alias_domain_delete": ("domain", [("alias_pk", "alias_domain")], 405),
    "domains:dkim": ("domain", [], 200),
    "domains:dkim_activate": ("domain", [("key_pk", "key")], 405),
    "domains:dkim_retire": ("domain", [("key_pk", "key")], 405),
    "mailboxes:list": ("domain", [], 200),
    "mailboxes:create": ("domain", [], 200),
    "mailboxes:edit": ("domain", [("mailbox_pk", "mailbox")], 200),
    "mailboxes:password": ("domain", [("mailbox_pk", "mailbox")], 405),
    "mailboxes:suspend": ("domain", [("mailbox_pk", "mailbox")], 405),
    "mailboxes:delete": ("domain", [("mailbox_pk", "mailbox")], 200),
    "mailboxes:aliases": ("domain", [], 200),
    "mailboxes:alias_create": ("domain", [], 200),
    "mailboxes:alias_edit": ("domain", [("alias_pk", "alias")], 200),
    "mailboxes:alias_delete": ("domain", [("alias_pk", "alias")], 405),
    "mailboxes:relay": ("domain", [], 200),
    "mailboxes:relay_revoke": ("domain", [("cred_pk", "cred")], 405),
    "mailboxes:import": ("domain", [], 200),
    "mailboxes:export_mailboxes": ("domain", [], 200),
    "mailboxes:export_aliases": ("domain", [], 200),
    "delivery:domain_log": ("domain", [], 200),
    "delivery:domain_queue": ("domain", [], 200),
    "delivery:domain_suppressions": ("domain", [], 200),
    "delivery:queue_retry": ("domain", [("message_pk", "queued")], 405),
    "delivery:queue_delete": ("domain", [("message_pk", "queued")], 405),
    "delivery:suppression_remove": ("domain", [("suppression_pk", "suppression")], 405),
    "delivery:domain_webhooks": ("domain", [], 200),
    "delivery:webhook_test": ("domain", [("webhook_pk", "webhook")], 405),
    "delivery:webhook_delete": ("domain", [("webhook_pk", "webhook")], 405),
    "me:overview": ("mailbox", [], 200),
    "me:password": ("mailbox", [], 200),
    "me:forwarding": ("mailbox", [], 200),
    "me:autoreply": ("mailbox", [], 200),
    "me:app_passwords": ("mailbox", [], 200),
    "me:app_password_revoke": ("mailbox", [("cred_pk", "app_password")], 405),
    "me:log": ("mailbox", [], 200),
    "dnswizard:start": ("domain", [], 200),
    "dnswizard:ownership": ("domain", [], 200),
    "dnswizard:verify": ("domain", [], 405),
    "dnswizard:records": ("domain", [], 200),
    "dnswizard:zone": ("domain", [], 200),
    "dnswizard:check": ("domain", [], 200),
}
# Pages that only show something: the allowed role's POST is 405, never a change.
READ_ONLY = {"dnswizard:start", "dnswizard:ownership", "dnswizard:records", "dnswizard:zone"}
# Not portal pages: Django's admin (its own permission system), operational endpoints, the API
# (its own matrix in tests/api/test_permission_matrix.py), webmail (objects are files of the
# logged-in user's own Maildir, never ids: tests/webmail prove no one reads another's mail) and
# the public client set-up and MTA-STS documents.
OUTSIDE_PORTAL = ("admin:", "healthz", "metrics", "api:", "webmail:", "autoconfig", "autodiscover",
                  "mta_sts_policy")


def _names(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{prefix}{p.namespace}:" if p.namespace else prefix
            yield from _names(p.url_patterns, ns)
        elif isinstance(p, URLPattern) and p.name:
            yield prefix + p.name


def test_every_portal_url_is_in_the_matrix():
    names = {n for n in _names(get_resolver().url_patterns) if not n.startswith(OUTSIDE_PORTAL)}
    assert names - MATRIX.keys() == set(), "add these URLs to the permission MATRIX"
    assert MATRIX.keys() - names == set(), "these MATRIX rows name URLs that no longer exist"


def _url(name, kwargs_spec, world, objects_from=None):
    kwargs = {}
    if MATRIX[name][0] in ("domain", "domain_super"):
        kwargs["pk"] = world["domain"].pk
    for kwarg, key in kwargs_spec:
        kwargs[kwarg] = (objects_from or world)[key].pk
    return reverse(name, kwargs=kwargs)


def _expected(scope, role, tenant):
    """Status for a role that may NOT use the URL, or None when it may."""
    if role == "anonymous":
        return None if scope == "public" else 302
    if scope in ("public", "user"):
        return None
    if scope == "mailbox":
        return None if role == "bob" else 404
    if scope in ("admin",):
        return 403 if role == "bob" else None
    if scope == "superadmin":
        return None if role == "superadmin" else 403
    owner = {"example.org": "alice", "other.test": "charlie"}[tenant]
    if role not in ("superadmin", owner):
        return 404
    if scope == "domain_super" and role != "superadmin":
        return 403
    return None


ROLES = ["anonymous", "bob", "charlie", "alice", "superadmin"]


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_each_role_gets_exactly_its_rights_on_every_url(name, worlds, client, request):
    scope, spec, get_status = MATRIX[name]
    users = {"anonymous": None, **{r: request.getfixturevalue(r) for r in ROLES[1:]}}
    users["bob"] = users["bob"].user
    bob_password, _ = RelayCredential.issue(domain=users["bob"].mailbox.domain, mailbox=users["bob"].mailbox,
                                            label="laptop")
    mine = worlds["example.org"] if scope != "mailbox" else {"app_password": bob_password}
    tenants = [("other.test", worlds["other.test"]), ("example.org", worlds["example.org"])]
    if scope not in ("domain", "domain_super") and not spec:
        tenants = tenants[1:]  # the URL names no object: nothing of another tenant to aim at
    for tenant, world in tenants:
        if scope == "mailbox":
            world = mine if tenant == "example.org" else worlds[tenant]
        url = _url(name, spec, world)
        allowed = []
        for role in ROLES:
            client.logout()
            if users[role]:
                client.force_login(users[role])
            denied = _expected(scope, role, tenant) if scope != "mailbox" or tenant == "example.org" else (
                302 if role == "anonymous" else 404)
            if denied is None:
                allowed.append(role)
                continue
            for method in (client.get, client.post):
                response = method(url)
                assert response.status_code == denied, f"{role} {method.__name__.upper()} {url}"
                if denied == 302:
                    assert response["Location"].startswith("/login/")
        for role in allowed:
            client.logout()
            if users[role]:
                client.force_login(users[role])
            expected = get_status.get(role, get_status["*"]) if isinstance(get_status, dict) else get_status
            assert client.get(url).status_code == expected, f"{role} GET {url}"
        if allowed and allowed[-1] != "anonymous":
            client.force_login(users[allowed[0] if allowed[0] != "anonymous" else allowed[-1]])
            ok = (405,) if name in READ_ONLY else (200, 302, 400)
            assert client.post(url).status_code in ok, f"{allowed[0]} POST {url}"


@pytest.mark.parametrize("name", sorted(n for n, row in MATRIX.items() if row[0] == "domain" and row[1]))
def test_an_admin_cannot_reach_another_tenants_object_through_their_own_domain(name, worlds, client, alice):
    """/domains/<alice's domain>/mailboxes/<charlie's mailbox>/ is a 404, for GET and POST."""
    url = _url(name, MATRIX[name][1], worlds["example.org"], objects_from=worlds["other.test"])
    client.force_login(alice)
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404


def test_a_mailbox_user_cannot_revoke_someone_elses_app_password(worlds, client, bob):
    client.force_login(bob.user)
    url = reverse("me:app_password_revoke", kwargs={"cred_pk": worlds["example.org"]["app_password"].pk})
    assert client.post(url).status_code == 404
    worlds["example.org"]["app_password"].refresh_from_db()
    assert worlds["example.org"]["app_password"].revoked_at is None


def test_csrf_is_enforced_on_portal_forms(worlds, alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    domain = worlds["example.org"]["domain"]
    response = strict.post(reverse("mailboxes:suspend", kwargs={"pk": domain.pk,
                                                                "mailbox_pk": worlds["example.org"]["mailbox"].pk}))
    assert response.status_code == 403
    worlds["example.org"]["mailbox"].refresh_from_db()
    assert worlds["example.org"]["mailbox"].active
