"""Per-process memories of the delivery path must not carry one test's DNS into the next."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest


@pytest.fixture(autouse=True)
def fresh_mta_sts_and_mx_answers():
    from delivery import mta_sts, routing

    mta_sts.forget_recent()
    routing.forget_hosts()
    yield
    mta_sts.forget_recent()
    routing.forget_hosts()


@dataclass
class Published:
    task: str
    args: tuple
    expires: str | None
    at: float   # time.monotonic() when it was sent


@pytest.fixture
def published_tasks():
    """Every task this test sends to the broker, as it is sent."""
    from celery.signals import before_task_publish

    published: list[Published] = []

    def note(sender=None, body=None, headers=None, **_):
        published.append(Published(sender, body[0], headers.get("expires"), time.monotonic()))

    before_task_publish.connect(note)
    yield published
    before_task_publish.disconnect(note)
