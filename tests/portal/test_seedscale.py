"""seedscale: the command bench/portal relies on, run at a tiny scale."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from delivery.models import MessageLog, QueuedRecipient
from domains.models import Domain
from mailboxes.models import Alias, Mailbox


def test_seedscale_writes_the_asked_counts_and_seeded_accounts_log_in(db, client):
    call_command("seedscale", domains=3, mailboxes=10, aliases=4, logs=25, queue=5, batch=4)
    assert Domain.objects.count() == 3
    assert (Mailbox.objects.count(), Alias.objects.count()) == (10, 4)
    assert (MessageLog.objects.count(), QueuedRecipient.objects.count()) == (25, 5)
    assert Domain.objects.get(name="seed00000.test").admins.get().username == "seed-admin"
    response = client.post("/login/", {"username": "user00000@seed00001.test", "password": "seed password"})
    assert response.status_code == 302


def test_seedscale_refuses_to_seed_the_same_prefix_twice(db):
    call_command("seedscale", domains=1, mailboxes=1, aliases=0, logs=0, queue=0)
    with pytest.raises(CommandError, match="exist already"):
        call_command("seedscale", domains=1, mailboxes=1, aliases=0, logs=0, queue=0)
