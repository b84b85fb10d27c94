"""Periodic DNS re-checks: thin tasks around domains.dns_checks.record_checks."""

import logging

from celery import shared_task

from .dns_checks import record_checks
from .models import Domain

log = logging.getLogger(__name__)


@shared_task(name="domains.tasks.recheck_all_domains")
def recheck_all_domains() -> int:
    """Fan out one short task per active domain, so one slow zone never delays the others."""
    ids = list(Domain.objects.filter(active=True).values_list("id", flat=True))
    for domain_id in ids:
        check_domain.delay(domain_id)
    return len(ids)


@shared_task(name="domains.tasks.check_domain")
def check_domain(domain_id: int) -> list[str]:
    domain = Domain.objects.filter(pk=domain_id, active=True).first()
    if domain is None:
        return []
    changed = [row.key for row in record_checks(domain) if row.changed]
    if changed:
        log.warning("DNS of %s changed since the last check: %s", domain.name, ", ".join(changed))
    return changed
