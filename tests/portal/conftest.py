"""Portal fixtures: a small world of objects in each tenant, to aim requests at."""

from __future__ import annotations

import pytest

from tests.support import PASSWORD


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Portal tests create a dozen accounts each; argon2 (~0.1 s a hash) would dominate the suite.

    What the hash is does not change who may see what; the argon2/Dovecot format is tested in
    tests/mailboxes. Accounts created here still log in through the real backend.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _world(domain, local: str):
    import datetime as dt

    from django.utils import timezone

    from delivery.models import QueuedMessage, QueuedRecipient, Suppression, Webhook
    from domains.dkim import create_key
    from domains.models import DomainAlias
    from mailboxes.models import RelayCredential
    from mailboxes.provisioning import create_alias, create_mailbox

    mailbox = create_mailbox(f"{local}@{domain.name}", PASSWORD)
    app_password, _ = RelayCredential.issue(domain=domain, mailbox=mailbox, label="phone")
    cred, _ = RelayCredential.issue(domain=domain, label="shop", allowed_senders=[f"@{domain.name}"])
    queued = QueuedMessage.objects.create(sender=f"{local}@{domain.name}", data=b"Subject: hi\r\n\r\nhi\r\n",
                                          sender_domain=domain)
    QueuedRecipient.objects.create(message=queued, address="friend@remote.test", domain="remote.test",
                                   state="deferred")
    suppression = Suppression.objects.create(domain=domain, address="gone@remote.test",
                                             expires_at=timezone.now() + dt.timedelta(days=30))
    return {
        "domain": domain,
        "mailbox": mailbox,
        "alias": create_alias(f"sales@{domain.name}", [mailbox.address]),
        "alias_domain": DomainAlias.objects.create(name=f"alias-{domain.name}", target=domain),
        "key": create_key(domain, "ed25519"),
        "cred": cred,
        "app_password": app_password,
        "suppression": suppression,
        "queued": queued,
        # A documentation address: the matrix's POST to "send a test event" is refused before any
        # lookup or connection (no private or reserved addresses), so no test leaves loopback.
        "webhook": Webhook.objects.create(domain=domain, url="https://192.0.2.7/events", events=["delivered"]),
        "admin": domain.admins.first(),
    }


@pytest.fixture
def worlds(example_org, other_test, alice, charlie, bob):
    """Objects of example.org (alice's tenant) and other.test (charlie's), keyed by domain name."""
    return {"example.org": _world(example_org, "dave"), "other.test": _world(other_test, "erin")}
