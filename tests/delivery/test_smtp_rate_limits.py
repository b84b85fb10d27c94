"""Hourly sending limits: a relay credential's or app password's `rate_limit_per_hour`, a
mailbox's over all its logins and a domain's over all its senders (`send_limit_per_hour`).

Over a limit RCPT answers 451 4.7.1 naming it (temporary: the client keeps its mail for later),
what was accepted before is delivered, and other logins are not affected. Through the real SMTP
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


def test_a_mailbox_over_its_limit_is_refused_whichever_of_its_logins_sends(smtp_service, bob):
    bob.send_limit_per_hour = 3
    bob.save()
    phone, phone_secret = RelayCredential.issue(domain=bob.domain, mailbox=bob, label="phone")
    assert submit(smtp_service, "bob@example.org", ["a@remote.test", "b@remote.test"], message()) == {}
    refused = submit(smtp_service, "bob@example.org", ["c@remote.test", "d@remote.test"], message(),
                     "bob@example.org", phone_secret)
    code, text = refused["d@remote.test"]
    assert code == 451 and "3 recipients an hour reached for this mailbox" in text.decode()
    assert text.decode().startswith("4.7.1 ")


def test_a_domains_limit_binds_all_its_senders_together_and_a_refusal_counts_nowhere(smtp_service, bob):
    bob.send_limit_per_hour = 3
    bob.save()
    bob.domain.send_limit_per_hour = 2
    bob.domain.save()
    shop, shop_secret = RelayCredential.issue(domain=bob.domain, label="shop", allowed_senders=["shop@example.org"])
    assert submit(smtp_service, "bob@example.org", ["a@remote.test"], message()) == {}
    refused = submit(smtp_service, "shop@example.org", ["b@remote.test", "c@remote.test"],
                     message("Shop <shop@example.org>"), shop.login, shop_secret)
    code, text = refused["c@remote.test"]
    assert code == 451 and "2 recipients an hour reached for domain example.org" in text.decode()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        submit(smtp_service, "bob@example.org", ["d@remote.test"], message())
    # Lifted for the domain (a new login reads the limits), bob's own count is still 1, not 2:
    # the recipient the domain refused was not left counted against the mailbox.
    bob.domain.send_limit_per_hour = 0
    bob.domain.save()
    assert submit(smtp_service, "bob@example.org", ["e@remote.test", "f@remote.test"], message()) == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused) as over:
        submit(smtp_service, "bob@example.org", ["g@remote.test"], message())
    assert "for this mailbox" in over.value.recipients["g@remote.test"][1].decode()


def test_every_limit_counts_a_recipient_and_a_refusal_gives_back_what_the_others_counted(clean_cache):
    now = 3600 * 500_000 + 10
    login = rate_limits.SendLimit("credential:1", 5, "this login")
    mailbox = rate_limits.SendLimit("mailbox:1", 5, "this mailbox")
    domain = rate_limits.SendLimit("domain:1", 2, "domain example.org")
    assert rate_limits.take_all((login, mailbox, domain), now) is None
    assert rate_limits.take_all((login, mailbox, domain), now) is None
    assert rate_limits.take_all((login, mailbox, domain), now) == domain
    assert [rate_limits.take("credential:1", 5, now) for _ in range(4)] == [True, True, True, False]
    assert [rate_limits.take("mailbox:1", 5, now) for _ in range(4)] == [True, True, True, False]
