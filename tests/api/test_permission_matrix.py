"""Every endpoint x every role x every method, built from the router's own URL list.

A new endpoint lands in this matrix by being registered: it fails here until it has an object
factory below. The objects all live in example.org; alice administers it, charlie administers
other.test and must get 404 for each of them on every method, bob (a mailbox user) may only read.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from api.urls import router
from delivery.models import MessageLog, QueuedMessage, QueuedRecipient, Suppression, Webhook
from mailboxes.models import RelayCredential
from mailboxes.provisioning import create_alias, create_mailbox
from tests.support import PASSWORD

METHODS = ["get", "head", "options", "post", "patch", "put", "delete"]
SAFE = ("get", "head", "options")
ALLOWED = {200, 201, 204, 400, 409}  # passed the permission layer; 400/409 are about the empty body
BASENAMES = {viewset: basename for _, viewset, basename in router.registry}
SUPERADMIN_ONLY = {("domain", "create"), ("domain", "partial_update"), ("domain", "destroy")}


def make_object(basename: str, domain):
    """One object of each registered kind, in `domain`."""
    if basename == "domain":
        return domain
    if basename == "mailbox":
        return create_mailbox(f"carol@{domain.name}", PASSWORD)
    if basename == "alias":
        return create_alias(f"info@{domain.name}", [f"bob@{domain.name}"])
    if basename == "relaycredential":
        return RelayCredential.issue(domain=domain, label="crm", allowed_senders=[f"@{domain.name}"])[0]
    if basename == "dkimkey":
        return domain.active_dkim_key()
    if basename == "messagelog":
        return MessageLog.objects.create(domain=domain, direction="inbound", result="accepted",
                                         mail_from="someone@remote.test", recipients=f"bob@{domain.name}")
    if basename == "queue":
        message = QueuedMessage.objects.create(sender=f"bob@{domain.name}", data=b"Subject: hi\r\n\r\nhi\r\n",
                                               sender_domain=domain)
        return QueuedRecipient.objects.create(message=message, address="x@remote.test", domain="remote.test")
    if basename == "suppression":
        return Suppression.objects.create(domain=domain, address="gone@remote.test", reason="550 5.1.1 no such user",
                                          expires_at=timezone.now() + dt.timedelta(days=30))
    if basename == "webhook":
        return Webhook.objects.create(domain=domain, url=f"https://hooks.{domain.name}/events", events=["delivered"])
    raise AssertionError(f"no object factory for the API endpoint {basename!r}: add one to the matrix")


def route_id(pattern) -> str:
    return pattern.name


ROUTES = list(router.urls)


def expected(role: str, basename: str | None, action: str | None, method: str, detail: bool) -> set[int]:
    if role == "anonymous":
        return {401}
    if role == "bob" and method not in SAFE:
        return {403}  # a mailbox user writes nothing through the API
    if action is None:
        return {405}
    if detail and role in ("charlie", "bob"):
        return {404}  # not theirs: not found, whatever the method
    if role != "superadmin" and (basename, action) in SUPERADMIN_ONLY:
        return {403}
    return ALLOWED


@pytest.mark.parametrize("pattern", ROUTES, ids=route_id)
def test_every_role_gets_what_the_matrix_says_on_every_method(pattern, roles, example_org, bob):
    view = pattern.callback
    actions = getattr(view, "actions", {"get": "root", "head": "root"})
    basename = BASENAMES.get(getattr(view, "cls", None))
    detail = "pk" in pattern.pattern.regex.groupindex
    obj = make_object(basename, example_org) if basename else None
    url = reverse(f"api:{pattern.name}", kwargs={"pk": obj.pk} if detail else {})
    failures = []
    for role, client in roles.items():
        for method in METHODS:
            with transaction.atomic():
                response = client.generic(method.upper(), url, data="{}", content_type="application/json")
                transaction.set_rollback(True)
            want = expected(role, basename, actions.get(method), method, detail)
            if response.status_code not in want:
                failures.append(f"{role} {method.upper()} {url}: {response.status_code}, expected {sorted(want)}")
            if method == "head" or response.status_code == 204:
                pass
            elif not response["Content-Type"].startswith("application/json"):
                failures.append(f"{role} {method.upper()} {url}: {response['Content-Type']} body")
            elif response.status_code >= 400:
                body = json.loads(response.content)
                if not body or (response.status_code != 400 and "detail" not in body):
                    failures.append(f"{role} {method.upper()} {url}: body {body!r} names no problem")
            if method == "get" and not detail and basename and response.status_code == 200:
                ids = [row["id"] for row in response.json()["results"]]
                sees = obj.pk in ids
                should_see = role in ("superadmin", "alice")
                if sees != should_see:
                    failures.append(f"{role} GET {url}: lists example.org's object: {sees}")
    assert not failures, "\n".join(failures)


def test_the_matrix_covers_every_registered_endpoint():
    registered = {basename for _, _, basename in router.registry}
    routed = {BASENAMES[p.callback.cls] for p in ROUTES if hasattr(p.callback, "actions")}
    assert registered == routed
    assert len(ROUTES) >= 2 * len(registered)


def test_bob_reads_his_own_mailbox_and_may_not_change_it(roles, bob):
    url = reverse("api:mailbox-detail", kwargs={"pk": bob.pk})
    assert roles["bob"].get(url).json()["address"] == "bob@example.org"
    assert [m["address"] for m in roles["bob"].get("/api/mailboxes/").json()["results"]] == ["bob@example.org"]
    response = roles["bob"].patch(url, {"quota": 0}, format="json")
    assert response.status_code == 403
    assert "may only read its own mailbox" in response.json()["detail"]
    assert roles["bob"].get("/api/domains/").json()["results"] == []


def test_an_admin_with_a_mailbox_in_another_domain_may_read_it_but_not_raise_its_quota(api, alice, other_test):
    from mailboxes.models import Mailbox

    own = create_mailbox("alice@other.test", PASSWORD)
    own.user.delete()  # the mailbox moves to alice's admin account
    own = Mailbox.objects.create(user=alice, domain=other_test, local_part="alice", quota=100)
    client = api(alice)
    url = reverse("api:mailbox-detail", kwargs={"pk": own.pk})
    assert client.get(url).status_code == 200
    response = client.patch(url, {"quota": 0}, format="json")
    assert response.status_code == 403
    own.refresh_from_db()
    assert own.quota == 100


def test_alice_gets_404_for_every_object_of_other_test(api, alice, other_test):
    client = api(alice)
    for pattern in ROUTES:
        if "pk" not in pattern.pattern.regex.groupindex:
            continue
        obj = make_object(BASENAMES[pattern.callback.cls], other_test)
        url = reverse(f"api:{pattern.name}", kwargs={"pk": obj.pk})
        for method in METHODS:
            response = client.generic(method.upper(), url, data="{}", content_type="application/json")
            if method not in pattern.callback.actions:
                assert response.status_code == 405, (method, url)
            elif method == "head":
                assert response.status_code == 404, url
            else:
                assert (response.status_code, response.json()) == (404, {"detail": "Not found."}), (method, url)
