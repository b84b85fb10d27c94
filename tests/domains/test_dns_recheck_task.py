"""Celery beat re-checks every active domain's DNS through a real worker and flags what changed."""

import time

import pytest
from django.conf import settings

from domains.models import DnsCheck
from domains.tasks import recheck_all_domains
from tests.domains.dns_fixtures import published_zone

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dns_worker(checker_dns, monkeypatch, request):
    """A real worker whose checks ask the loopback nsd (the child reads these from its environment)."""
    monkeypatch.setenv("DNS_RESOLVERS", f"127.0.0.1:{checker_dns.port}")
    monkeypatch.setenv("DNS_AUTHORITATIVE_PORT", str(checker_dns.port))
    monkeypatch.setenv("MAIL_PUBLIC_IPS", "127.0.0.1")
    return request.getfixturevalue("celery_worker_process")


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError("the worker did not store the checks in time")


def test_the_recheck_runs_on_the_beat_schedule():
    entry = settings.CELERY_BEAT_SCHEDULE["dns-recheck"]
    assert entry["task"] == "domains.tasks.recheck_all_domains"
    assert entry["schedule"] == settings.DNS_RECHECK_INTERVAL


def test_the_periodic_recheck_stores_every_active_domain_and_flags_changes(dns_worker, example_org, other_test,
                                                                          checker_dns):
    other_test.active = False
    other_test.save()
    checker_dns.zone("example.org", *published_zone(example_org))
    assert recheck_all_domains.delay().get(timeout=60) == 1
    wait_for(lambda: DnsCheck.objects.filter(domain=example_org, key="dmarc", status="ok").exists())
    assert not DnsCheck.objects.filter(domain=other_test).exists()
    assert not DnsCheck.objects.filter(changed=True).exists()

    checker_dns.zone("example.org", *[line for line in published_zone(example_org) if "_dmarc" not in line])
    recheck_all_domains.delay().get(timeout=60)
    row = wait_for(lambda: DnsCheck.objects.filter(domain=example_org, key="dmarc", changed=True).first())
    assert (row.previous_status, row.status, row.found) == ("ok", "error", "(no DMARC record)")
