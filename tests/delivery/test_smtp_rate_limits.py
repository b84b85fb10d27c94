"""A relay credential's `rate_limit_per_hour`: recipients it may send to in any sixty minutes.

Over the limit RCPT answers 451 4.7.1 (temporary: the client keeps its mail for later), what
was accepted before is delivered, and other logins are not affected. Through the real SMTP
service; the sliding hour itself is checked against explicit clock values.
"""

from __future__ import annotations

import smtplib

import pytest
from django.core.cache import cache

from delivery import rate_limits
from delivery.models import QueuedMessage
from mailboxes.models import RelayCredential
from tests.delivery.test_smtp_submission import message, submit


def test_a_credential_over_its_hourly_limit_is_refused_at_rcpt_and_keeps_what_it_sent(shared_smtp_service, bob):
    cred, secret = RelayCredential.issue(domain=bob.domain, label="web shop", allowed_senders=["shop@example.org"],
                                         rate_limit_per_hour=3)
    shop = message("Shop <shop@example.org>")
    assert submit(shared_smtp_service, "shop@example.org", ["a@remote.test", "b@remote.test"], shop,
                  cred.login, secret) == {}
    refused = submit(shared_smtp_service, "shop@example.org", ["c@remote.test", "d@remote.test"], shop,
                     cred.login, secret)
    assert list(refused) == ["d@remote.test"]
    code, text = refused["d@remote.test"]
    assert code == 451 and text.decode().startswith("4.7.1 Sending limit of 3 recipients an hour")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as over:
        submit(shared_smtp_service, "shop@example.org", ["e@remote.test"], shop, cred.login, secret)
    assert over.value.recipients["e@remote.test"][0] == 451
    queued = sorted(r.address for m in QueuedMessage.objects.all() for r in m.recipients.all())
    assert queued == ["a@remote.test", "b@remote.test", "c@remote.test"]


def test_a_limit_binds_only_its_own_credential(shared_smtp_service, bob):
    limited, limited_secret = RelayCredential.issue(domain=bob.domain, label="printer", rate_limit_per_hour=1,
                                                    allowed_senders=["@example.org"])
    other, other_secret = RelayCredential.issue(domain=bob.domain, label="crm", allowed_senders=["@example.org"])
    news = message("News <news@example.org>")
    assert submit(shared_smtp_service, "news@example.org", ["a@remote.test"], news, limited.login,
                  limited_secret) == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        submit(shared_smtp_service, "news@example.org", ["b@remote.test"], news, limited.login, limited_secret)
    recipients = [f"r{n}@remote.test" for n in range(5)]
    assert submit(shared_smtp_service, "news@example.org", recipients, news, other.login, other_secret) == {}
    assert submit(shared_smtp_service, "bob@example.org", recipients, message()) == {}, "the mailbox's own login"


@pytest.fixture
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def test_the_hour_slides_the_previous_hours_count_fading_as_it_leaves_the_window(clean_cache):
    hour = 3600 * 500_000
    assert all(rate_limits.take(7, 10, now=hour + 3599) for _ in range(10))
    assert not rate_limits.take(7, 10, now=hour + 3599), "ten in the last minute of the hour"
    half_past = hour + 3600 + 1800  # half of the previous hour is still inside the window: 5 of its 10
    assert [rate_limits.take(7, 10, now=half_past) for _ in range(6)] == [True] * 5 + [False]
    near_the_end = hour + 2 * 3600 + 3540  # the first hour is gone, a sixtieth of the second is left
    assert [rate_limits.take(7, 10, now=near_the_end) for _ in range(10)] == [True] * 9 + [False]
    later = hour + 4 * 3600  # two clock hours on: nothing counted is inside the window
    assert all(rate_limits.take(7, 10, now=later) for _ in range(10))
    assert rate_limits.take(8, 1, now=half_past), "another credential counts on its own"
