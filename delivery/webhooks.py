"""Webhooks: a domain's outbound delivery outcomes POSTed to its HTTPS endpoints (as Postal's).

`events_for` and `save` write one WebhookEvent row per endpoint in the transaction that records the outcome
(`queue.record`, `queue.record_delivered`), so an outcome and its events commit together or not
at all; `send_due` (beat, every QUEUE_SWEEP_INTERVAL) POSTs them and retries until the endpoint
answers 2xx or WEBHOOK_LIFETIME runs out: at least once, so every request names its event
(`Mailhost-Event-Id`) for the receiver to drop repeats. Each request is signed:
`Mailhost-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the webhook's
secret>`, the time inside the MAC so that a receiver can refuse replays (Stripe's scheme).

A URL is a request the platform makes on a tenant's behalf, so it must not reach what the
tenant cannot (SSRF): https only, no credentials in it; the host is resolved through
DNS_RESOLVERS and every address it has must be public (not loopback, private, link-local or
reserved) unless WEBHOOK_PRIVATE_ADDRESSES is on; the connection goes to the address that was
checked (a second lookup could answer differently); redirects are not followed; the certificate
is verified against the system's store or WEBHOOK_CA_FILE.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import https_requests, routing
from .models import Webhook, WebhookEvent

log = logging.getLogger(__name__)
RETRY_SCHEDULE = [60, 300, 900, 3600, 4 * 3600]     # then every 4 hours until WEBHOOK_LIFETIME
EVENTS_PER_RUN = 50
# A run stops starting requests after this long and leaves the rest to the next: webhooks share
# the worker processes that deliver mail, which one tenant's slow endpoints must not hold up.
RUN_SECONDS = 30

# Which domains have webhooks, per process: the delivery path asks for every outcome and must not
# pay a query each time. Remembered SMTP_DIRECTORY_CACHE seconds, like the other directory
# answers: a new webhook gets events within that time.
_hooks: dict[int, list[tuple[int, frozenset[str], str]]] = {}
_hooks_read_at = -1e9
_hooks_lock = threading.Lock()


def forget() -> None:
    global _hooks_read_at
    with _hooks_lock:
        _hooks_read_at = -1e9


def _hooks_for(domain_id: int | None) -> list[tuple[int, frozenset[str], str]]:
    """(webhook id, its events, its domain's name) of the domain's active webhooks."""
    global _hooks, _hooks_read_at
    if domain_id is None:
        return []
    if time.monotonic() - _hooks_read_at > settings.SMTP_DIRECTORY_CACHE:
        fresh: dict[int, list[tuple[int, frozenset[str], str]]] = {}
        for pk, domain, events, name in Webhook.objects.filter(active=True).values_list(
                "pk", "domain_id", "events", "domain__name"):
            fresh.setdefault(domain, []).append((pk, frozenset(events), name))
        with _hooks_lock:
            _hooks, _hooks_read_at = fresh, time.monotonic()
    return _hooks.get(domain_id, [])


def events_for(rcpts, kind: str, reply: str, tls: str = "", attempts_added: int = 0) -> list[WebhookEvent]:
    """The events of recipients about to get an outcome, made before its transaction (which
    must not wait on a query while it holds SQLite's writer lock) and saved inside it (`save`)."""
    hooks = {r.message.sender_domain_id: _hooks_for(r.message.sender_domain_id) for r in rcpts}
    if not any(hooks.values()):
        return []       # the delivery path's usual case: one dictionary lookup per domain
    rows = []
    now = timezone.now()
    for rcpt in rcpts:
        message = rcpt.message
        for webhook_id, events, domain in hooks[message.sender_domain_id]:
            if kind in events:
                rows.append(WebhookEvent(webhook_id=webhook_id, created_at=now, next_attempt_at=now, payload={
                    "event": kind, "at": now.isoformat(), "domain": domain, "queue_id": message.queue_id,
                    "sender": message.sender, "recipient": rcpt.address, "attempts": rcpt.attempts + attempts_added,
                    "reply": reply, "tls": tls or rcpt.tls_version}))
    return rows


def save(events: list[WebhookEvent]) -> None:
    """Inside the outcome's transaction: the outcome and its events commit together."""
    if events:
        WebhookEvent.objects.bulk_create(events)


def send_test(webhook: Webhook) -> str | None:
    """POST a `test` event at once (the portal's button): None when the endpoint took it, else
    what went wrong. Recorded as the webhook's last result like any other."""
    now = timezone.now()
    body = json.dumps({"event": "test", "at": now.isoformat(), "domain": webhook.domain.name},
                      separators=(",", ":")).encode()
    problem = post(webhook.url, webhook.secret, body, 0)
    Webhook.objects.filter(pk=webhook.pk).update(last_status=problem or "test delivered", last_attempt_at=now)
    return problem


def retry_delay(attempts: int) -> int:
    return RETRY_SCHEDULE[min(attempts, len(RETRY_SCHEDULE)) - 1]


def send_due(now: dt.datetime | None = None, most: int = EVENTS_PER_RUN) -> int:
    """POST the events that are due; returns how many were taken. An endpoint that fails is
    not asked again in the same run: its other events wait as long as the failed one, without
    an attempt counted, so an endpoint that is down is backed off as a whole."""
    now = now or timezone.now()
    # Long enough for every endpoint of the run to time out, so that no other worker takes the
    # same events meanwhile; a worker that dies leaves them this long.
    lease = dt.timedelta(seconds=most * settings.WEBHOOK_TIMEOUT + 60)
    with transaction.atomic():
        ids = list(WebhookEvent.objects.select_for_update(skip_locked=True)
                   .filter(state=WebhookEvent.State.PENDING, next_attempt_at__lte=now)
                   .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
                   .order_by("id").values_list("pk", flat=True)[:most])
        WebhookEvent.objects.filter(pk__in=ids).update(lease_until=now + lease)
    failing: dict[int, tuple[str, dt.datetime]] = {}
    stop_at = time.monotonic() + RUN_SECONDS
    events = list(WebhookEvent.objects.filter(pk__in=ids).select_related("webhook").order_by("id"))
    orphans = set(ids) - {event.pk for event in events}     # their webhook was deleted
    if orphans:
        WebhookEvent.objects.filter(pk__in=orphans).delete()
    for n, event in enumerate(events):
        if time.monotonic() > stop_at:
            WebhookEvent.objects.filter(pk__in=[e.pk for e in events[n:]]).update(lease_until=None)
            break
        hook = event.webhook
        if not hook.active:
            _finish(event, WebhookEvent.State.FAILED, "the webhook is turned off")
            continue
        if hook.pk in failing:
            problem, retry_at = failing[hook.pk]
            WebhookEvent.objects.filter(pk=event.pk).update(lease_until=None, next_attempt_at=retry_at,
                                                            last_status=problem[:300])
            continue
        body = json.dumps(event.payload, separators=(",", ":")).encode()
        problem = post(hook.url, hook.secret, body, event.pk)
        Webhook.objects.filter(pk=hook.pk).update(last_status=problem or "delivered", last_attempt_at=timezone.now())
        if problem is None:
            _finish(event, WebhookEvent.State.SENT, "")
        else:
            log.info("webhook %s: %s", hook.url, problem)
            failing[hook.pk] = (problem, _failed_attempt(event, problem))
    return len(ids)


def _finish(event: WebhookEvent, state: str, status: str) -> None:
    WebhookEvent.objects.filter(pk=event.pk).update(state=state, attempts=event.attempts + 1, lease_until=None,
                                                    last_status=status[:300])


def _failed_attempt(event: WebhookEvent, problem: str) -> dt.datetime:
    """Schedule the next attempt, or give up once WEBHOOK_LIFETIME is over; when to try next."""
    attempts = event.attempts + 1
    now = timezone.now()
    retry_at = now + dt.timedelta(seconds=retry_delay(attempts))
    if now - event.created_at >= dt.timedelta(seconds=settings.WEBHOOK_LIFETIME):
        _finish(event, WebhookEvent.State.FAILED, problem)
        return retry_at
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=attempts, lease_until=None, last_status=problem[:300],
                                                    next_attempt_at=retry_at)
    return retry_at


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used, said before it is saved; None when it may."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "Use an https:// URL: events carry addresses and must not cross the network in clear."
    if not parts.hostname:
        return "The URL names no host."
    if parts.username or parts.password:
        return "Put no user name or password in the URL: the signature authenticates the requests."
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    if not address.is_global and not settings.WEBHOOK_PRIVATE_ADDRESSES:
        return "The URL points at a private or local address, which this platform does not call."
    return None


def post(url: str, secret: str, body: bytes, event_id: int) -> str | None:
    """POST one signed event; None when the endpoint answered 2xx, else what went wrong."""
    if problem := url_problem(url):
        return problem
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 443
    try:
        addresses = (host,) if _is_ip(host) else routing.addresses(routing.resolver(), host)
    except routing.RoutingError as exc:
        return str(exc)[:300]
    if not addresses:
        return f"{host} has no address"
    if not settings.WEBHOOK_PRIVATE_ADDRESSES:
        private = [a for a in addresses if not ipaddress.ip_address(a).is_global]
        if private:
            return f"{host} has a private or local address ({private[0]}): not called"
    stamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: mailhost-webhooks\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               f"Mailhost-Event-Id: {event_id}\r\nMailhost-Signature: t={stamp},v1={signature}\r\n"
               f"Connection: close\r\n\r\n").encode() + body
    context = ssl.create_default_context(cafile=settings.WEBHOOK_CA_FILE or None)
    try:
        answer = https_requests.exchange(host, addresses[0], port, request, context,
                                         seconds=settings.WEBHOOK_TIMEOUT, limit=8192, until=b"\r\n")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    status_line = answer.split(b"\r\n", 1)[0]
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/") or not code.isdigit():
        return "the endpoint's answer is not HTTP"
    return None if code.startswith(b"2") else f"HTTP {int(code)}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
