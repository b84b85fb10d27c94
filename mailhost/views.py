"""Operational endpoints that are not part of any app's portal."""

from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness plus a database round trip: a load balancer should stop sending on failure."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any database failure is "unhealthy"
        return JsonResponse({"status": "error", "database": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})


def _metrics_allowed(request: HttpRequest) -> bool:
    """Loopback scrapers may read metrics; others need `Authorization: Bearer $METRICS_TOKEN`."""
    token = settings.METRICS_TOKEN
    if token and request.headers.get("Authorization", "") == f"Bearer {token}":
        return True
    return request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: gauges a mail operator alerts on (queue depth above all)."""
    if not _metrics_allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    from delivery.models import QueuedRecipient
    from domains.models import Domain
    from mailboxes.models import Mailbox

    lines = [
        "# HELP mailhost_domains Hosted domains by state.",
        "# TYPE mailhost_domains gauge",
    ]
    for active, count in Domain.objects.values_list("active").annotate(n=Count("id")).order_by():
        lines.append(f'mailhost_domains{{active="{str(active).lower()}"}} {count}')
    lines += ["# HELP mailhost_mailboxes Mailboxes.", "# TYPE mailhost_mailboxes gauge",
              f"mailhost_mailboxes {Mailbox.objects.count()}",
              "# HELP mailhost_queue_recipients Outbound queue recipients by state.",
              "# TYPE mailhost_queue_recipients gauge"]
    counts = dict(QueuedRecipient.objects.values_list("state").annotate(n=Count("id")).order_by())
    for state in QueuedRecipient.State.values:
        lines.append(f'mailhost_queue_recipients{{state="{state}"}} {counts.get(state, 0)}')
    oldest = (QueuedRecipient.objects.filter(state__in=QueuedRecipient.PENDING_STATES)
              .aggregate(oldest=Min("message__created_at"))["oldest"])
    age = (timezone.now() - oldest).total_seconds() if oldest else 0
    lines += ["# HELP mailhost_queue_oldest_seconds Age of the oldest undelivered message.",
              "# TYPE mailhost_queue_oldest_seconds gauge", f"mailhost_queue_oldest_seconds {age:.0f}"]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8")
