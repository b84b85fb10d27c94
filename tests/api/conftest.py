"""API actors: a client per role, authenticated the way scripts are, with a Bearer token."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from api.models import ApiToken


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        _, plaintext = ApiToken.issue(user, "tests")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


@pytest.fixture
def api():
    """`api(user)` is a client acting as `user`; `api(None)` is anonymous."""
    return client_for


@pytest.fixture
def roles(superadmin, alice, charlie, bob):
    """The five roles of the permission matrix, with bob's own account alongside."""
    return {
        "anonymous": client_for(None),
        "superadmin": client_for(superadmin),
        "alice": client_for(alice),
        "charlie": client_for(charlie),
        "bob": client_for(bob.user),
    }
