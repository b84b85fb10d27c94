"""Every list costs the same number of SQL queries whether a page holds one row or many."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from api.urls import router
from delivery.models import MessageLog, QueuedMessage, QueuedRecipient, Suppression, Webhook
from domains.models import DkimKey, Domain
from mailboxes.models import Alias, Mailbox, RelayCredential, User

MANY = 30


def add_rows(basename: str, domain: Domain, admin, n: int, start: int) -> None:
    """`n` more rows of one kind, in bulk: the test is about reading them."""
    names = [f"u{start + i}" for i in range(n)]
    if basename == "domain":
        domains = Domain.objects.bulk_create(Domain(name=f"{name}.test") for name in names)
        admin.administered_domains.add(*domains)
    elif basename == "mailbox":
        users = User.objects.bulk_create(User(username=f"{name}@{domain.name}") for name in names)
        Mailbox.objects.bulk_create(Mailbox(user=u, domain=domain, local_part=u.username.split("@")[0])
                                    for u in users)
    elif basename == "alias":
        Alias.objects.bulk_create(Alias(domain=domain, local_part=name, destinations=["x@remote.test"])
                                  for name in names)
    elif basename == "relaycredential":
        mailbox = Mailbox.objects.filter(domain=domain).first()
        RelayCredential.objects.bulk_create(
            RelayCredential(domain=domain, label=name, secret_hash="x", mailbox=mailbox if i % 2 else None,
                            login=None if i % 2 else f"relay-{name}@{domain.name}")
            for i, name in enumerate(names))
    elif basename == "dkimkey":
        DkimKey.objects.bulk_create(DkimKey(domain=domain, selector=name, private_key="-", public_key="AAAA")
                                    for name in names)
    elif basename == "messagelog":
        MessageLog.objects.bulk_create(MessageLog(domain=domain, direction="inbound", result="accepted",
                                                  subject=name) for name in names)
    elif basename == "queue":
        messages = QueuedMessage.objects.bulk_create(
            QueuedMessage(queue_id=name.upper(), sender=f"bob@{domain.name}", data=b"x", sender_domain=domain)
            for name in names)
        QueuedRecipient.objects.bulk_create(QueuedRecipient(message=m, address="x@remote.test",
                                                            domain="remote.test") for m in messages)
    elif basename == "suppression":
        until = timezone.now() + dt.timedelta(days=30)
        Suppression.objects.bulk_create(Suppression(domain=domain, address=f"{name}@remote.test", expires_at=until)
                                        for name in names)
    elif basename == "webhook":
        Webhook.objects.bulk_create(Webhook(domain=domain, url=f"https://{name}.example.net/", events=["bounced"])
                                    for name in names)
    else:
        raise AssertionError(f"no bulk rows for the API endpoint {basename!r}: add them here")


@pytest.mark.parametrize("basename", [basename for _, _, basename in router.registry])
def test_a_list_page_costs_a_constant_number_of_queries(basename, api, alice, bob, example_org,
                                                        django_assert_num_queries):
    client = api(alice)
    url = reverse(f"api:{basename}-list")
    if basename not in ("domain", "mailbox", "dkimkey"):  # those three already have their one row
        add_rows(basename, example_org, alice, 1, 0)
    client.get(url)  # the token records its first use once; later requests do not write
    with CaptureQueriesContext(connection) as one_row:
        response = client.get(url)
    assert response.json()["count"] == 1
    add_rows(basename, example_org, alice, MANY, 1)
    with django_assert_num_queries(len(one_row.captured_queries)):
        response = client.get(url)
    assert len(response.json()["results"]) == MANY + 1
    assert len(one_row.captured_queries) <= 3, [q["sql"] for q in one_row.captured_queries]
