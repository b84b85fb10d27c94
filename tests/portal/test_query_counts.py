"""Every list page costs the same number of SQL queries with one row and with many.

A page that grows a query per row (a forgotten select_related, a count per domain) is what makes
a portal slow at 100,000 mailboxes; this catches it with a handful of rows.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from delivery.models import MessageLog, QueuedMessage, QueuedRecipient
from domains.models import Domain
from mailboxes.models import Alias, Mailbox, User
from portal.models import AuditLog


def add_domains(n, **_):
    Domain.objects.bulk_create([Domain(name=f"bulk{i}-{n}.test") for i in range(n)])


def add_mailboxes(n, domain, **_):
    users = User.objects.bulk_create([User(username=f"m{i}-{n}@{domain.name}") for i in range(n)])
    Mailbox.objects.bulk_create([Mailbox(user=u, domain=domain, local_part=u.username.split("@")[0]) for u in users])


def add_aliases(n, domain, **_):
    Alias.objects.bulk_create([Alias(domain=domain, local_part=f"a{i}-{n}", destinations=[f"bob@{domain.name}"])
                               for i in range(n)])


def add_logs(n, domain, **_):
    MessageLog.objects.bulk_create([MessageLog(domain=domain, direction="inbound", result="accepted",
                                               mail_from="x@remote.test", recipients=f"bob@{domain.name}",
                                               subject=f"hello {i}") for i in range(n)])


def add_queue(n, domain, **_):
    for i in range(n):
        msg = QueuedMessage.objects.create(sender=f"bob@{domain.name}", data=b"x", sender_domain=domain)
        QueuedRecipient.objects.create(message=msg, address=f"r{i}@remote.test", domain="remote.test",
                                       state="deferred")


def add_audit(n, domain, **_):
    AuditLog.objects.bulk_create([AuditLog(actor_name="alice", action="mailbox.create", object_repr=f"m{i}",
                                           domain=domain, domain_name=domain.name) for i in range(n)])


PAGES = [
    # (url name, needs domain pk, who, add rows, query string)
    ("portal:dashboard", False, "superadmin", add_domains, {}),
    ("domains:list", False, "superadmin", add_domains, {}),
    ("domains:list", False, "superadmin", add_domains, {"q": "bulk"}),
    ("domains:list", False, "alice", add_domains, {}),
    ("mailboxes:list", True, "alice", add_mailboxes, {}),
    ("mailboxes:list", True, "alice", add_mailboxes, {"q": "m"}),
    ("mailboxes:aliases", True, "alice", add_aliases, {}),
    ("mailboxes:aliases", True, "alice", add_aliases, {"q": "a"}),
    ("delivery:domain_log", True, "alice", add_logs, {}),
    ("delivery:domain_log", True, "alice", add_logs, {"q": "hello"}),
    ("delivery:log", False, "superadmin", add_logs, {}),
    ("delivery:log", False, "superadmin", add_logs, {"q": "remote"}),
    ("delivery:domain_queue", True, "alice", add_queue, {}),
    ("delivery:queue", False, "superadmin", add_queue, {"q": "remote"}),
    ("portal:audit", False, "superadmin", add_audit, {}),
    ("portal:audit", False, "alice", add_audit, {"q": "mailbox"}),
    ("me:log", False, "bob", add_logs, {}),
    ("me:log", False, "bob", add_logs, {"q": "hello"}),
]


def _queries(client, url, params) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, params).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("name, scoped, who, add_rows, params", PAGES,
                         ids=[f"{p[0]}{'?' + next(iter(p[4])) if p[4] else ''}-{p[2]}" for p in PAGES])
def test_a_list_page_costs_the_same_queries_for_one_row_and_for_many(
        name, scoped, who, add_rows, params, client, request, example_org, django_assert_num_queries):
    user = request.getfixturevalue(who)
    client.force_login(getattr(user, "user", user))
    request.getfixturevalue("bob")
    url = reverse(name, kwargs={"pk": example_org.pk} if scoped else None)
    add_rows(1, domain=example_org)
    with_one = _queries(client, url, params)
    add_rows(70, domain=example_org)
    with django_assert_num_queries(with_one):
        response = client.get(url, params)
    assert response.status_code == 200
