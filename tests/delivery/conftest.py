"""Per-process memories of the delivery path must not carry one test's DNS into the next."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fresh_mta_sts_and_mx_answers():
    from delivery import mta_sts, routing

    mta_sts.forget_recent()
    routing.forget_hosts()
    yield
    mta_sts.forget_recent()
    routing.forget_hosts()
