"""Portal fixtures: a small world of objects in each tenant, to aim requests at."""

from __future__ import annotations

import pytest

from tests.support import PASSWORD


def _world(domain, local: str):
    from domains.dkim import create_key
    from domains.models import DomainAlias
    from mailboxes.models import RelayCredential
    from mailboxes.provisioning import create_alias, create_mailbox

    mailbox = create_mailbox(f"{local}@{domain.name}", PASSWORD)
    app_password, _ = RelayCredential.issue(domain=domain, mailbox=mailbox, label="phone")
    cred, _ = RelayCredential.issue(domain=domain, label="shop", allowed_senders=[f"@{domain.name}"])
    return {
        "domain": domain,
        "mailbox": mailbox,
        "alias": create_alias(f"sales@{domain.name}", [mailbox.address]),
        "alias_domain": DomainAlias.objects.create(name=f"alias-{domain.name}", target=domain),
        "key": create_key(domain, "ed25519"),
        "cred": cred,
        "app_password": app_password,
        "admin": domain.admins.first(),
    }


@pytest.fixture
def worlds(example_org, other_test, alice, charlie, bob):
    """Objects of example.org (alice's tenant) and other.test (charlie's), keyed by domain name."""
    return {"example.org": _world(example_org, "dave"), "other.test": _world(other_test, "erin")}
