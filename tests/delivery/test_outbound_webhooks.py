"""Delivery webhooks: a domain's outcomes POSTed, signed, to its HTTPS endpoint, and retried.

Real parts: mail goes to an aiosmtpd sink found through nsd on loopback; the endpoint is an
HTTPS server on 127.0.0.1 whose name (hooks.example.net) nsd publishes and whose certificate a
test CA signed; the worker's own functions claim, deliver and POST.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest
from django.utils import timezone

from delivery import outbound, queue, webhooks
from delivery.models import Webhook, WebhookEvent
from delivery.queue import enqueue
from tests.delivery.outbound_peers import CertificateAuthority, Sink, Trickler

MESSAGE = b"From: Bob <bob@example.org>\r\nTo: someone@remote.test\r\nSubject: hello\r\n\r\nHi there.\r\n"


class Endpoint:
    """An HTTPS receiver that keeps every request and answers `status`."""

    def __init__(self, ctx, status: int = 200):
        self.status = status
        self.requests: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink(dns_server, settings):
    dns_server.zone("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.2")
    dns_server.zone("example.net", "hooks IN A 127.0.0.1")
    with Sink() as s:
        settings.SMTP_OUTBOUND_PORT = s.port
        yield s


@pytest.fixture
def endpoint(sink, settings, tmp_path):
    ca = CertificateAuthority(tmp_path)
    settings.WEBHOOK_CA_FILE = str(ca.bundle)
    settings.WEBHOOK_PRIVATE_ADDRESSES = True     # the endpoint is on loopback
    receiver = Endpoint(ca.server_context("hooks.example.net"))
    yield receiver
    receiver.close()


def hook(domain, endpoint, events=("delivered", "bounced", "deferred", "expired")) -> Webhook:
    return Webhook.objects.create(domain=domain, url=f"https://hooks.example.net:{endpoint.port}/mail?x=1",
                                  events=list(events))


def run_queue() -> None:
    for token in queue.claim_due():
        run, rows = queue.take_over(token)
        outbound.deliver_batch(run, rows)


def signed_by(secret: str, headers: dict, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["mailhost-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 60


def test_a_delivery_and_a_bounce_reach_the_domains_endpoint_signed(bob, endpoint):
    webhook = hook(bob.domain, endpoint)
    delivered = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    bounced = enqueue("bob@example.org", ["rejected@remote.test"], MESSAGE)
    run_queue()
    assert webhooks.send_due() == 2
    assert len(endpoint.requests) == 2
    payloads = {}
    for headers, body in endpoint.requests:
        assert signed_by(webhook.secret, headers, body)
        assert headers["content-type"] == "application/json" and headers["mailhost-event-id"]
        assert headers["host"] == f"hooks.example.net:{endpoint.port}"
        payload = json.loads(body)
        payloads[payload["event"]] = payload
    assert payloads["delivered"]["queue_id"] == delivered.queue_id
    assert payloads["delivered"]["domain"] == "example.org"
    assert payloads["delivered"]["recipient"] == "someone@remote.test"
    assert payloads["delivered"]["reply"].startswith("250") and payloads["delivered"]["attempts"] == 1
    assert payloads["bounced"]["queue_id"] == bounced.queue_id
    assert payloads["bounced"]["reply"].startswith("550 5.1.1")
    assert payloads["bounced"]["sender"] == "bob@example.org"
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {"sent"}
    webhook.refresh_from_db()
    assert webhook.last_status == "delivered" and webhook.last_attempt_at is not None
    assert webhooks.send_due() == 0, "a sent event is not sent again"


def test_only_the_chosen_outcomes_of_the_webhooks_own_domain_are_sent(bob, other_test, endpoint):
    hook(bob.domain, endpoint, events=["bounced"])
    hook(other_test, endpoint)
    enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    run_queue()
    assert not WebhookEvent.objects.exists()


def test_a_failing_endpoint_gets_the_event_again_later_until_the_lifetime_runs_out(bob, endpoint, settings):
    webhook = hook(bob.domain, endpoint)
    endpoint.status = 500
    enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    enqueue("bob@example.org", ["other@remote.test"], MESSAGE)
    run_queue()
    webhooks.send_due()
    assert len(endpoint.requests) == 1, "a failing endpoint is asked once per run"
    events = list(WebhookEvent.objects.order_by("id"))
    assert all(e.state == "pending" for e in events)
    assert events[0].attempts == 1 and events[0].last_status == "HTTP 500"
    assert events[0].next_attempt_at > timezone.now() + dt.timedelta(seconds=50)
    webhook.refresh_from_db()
    assert webhook.last_status == "HTTP 500"
    assert events[1].attempts == 0 and events[1].next_attempt_at == events[0].next_attempt_at, "backed off too"
    assert webhooks.send_due() == 0
    endpoint.status = 204
    assert webhooks.send_due(timezone.now() + dt.timedelta(minutes=2)) == 2
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {"sent"}
    assert len({headers["mailhost-event-id"] for headers, _ in endpoint.requests}) == 2
    endpoint.status = 503
    settings.WEBHOOK_LIFETIME = 0
    enqueue("bob@example.org", ["third@remote.test"], MESSAGE)
    run_queue()
    webhooks.send_due()
    assert WebhookEvent.objects.order_by("-id").first().state == "failed"


def test_an_endpoint_on_a_private_address_is_not_called(bob, endpoint, settings):
    settings.WEBHOOK_PRIVATE_ADDRESSES = False
    hook(bob.domain, endpoint)
    enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    run_queue()
    webhooks.send_due()
    assert endpoint.requests == []
    event = WebhookEvent.objects.get()
    assert event.state == "pending" and "private or local address (127.0.0.1)" in event.last_status


def test_events_of_a_deleted_webhook_are_dropped_and_never_fail_a_delivery(bob, endpoint, sink):
    webhook = hook(bob.domain, endpoint)
    webhooks._hooks_for(bob.domain_id)     # remembered, as a worker would
    Webhook.objects.filter(pk=webhook.pk).delete()
    message = enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    run_queue()
    assert message.recipients.get().state == "delivered"
    assert WebhookEvent.objects.count() == 1
    webhooks.send_due()
    assert not WebhookEvent.objects.exists() and endpoint.requests == []


@pytest.mark.parametrize("url, problem", [
    ("http://hooks.example.net/x", "Use an https:// URL"),
    ("https://user:pw@hooks.example.net/x", "no user name or password"),
    ("https://10.1.2.3/x", "private or local address"),
    ("https://[::1]:8443/x", "private or local address"),
    ("https:///x", "names no host"),
])
def test_a_url_that_cannot_be_used_is_refused_with_the_reason(url, problem, settings):
    settings.WEBHOOK_PRIVATE_ADDRESSES = False
    assert problem in webhooks.url_problem(url)


def test_a_public_https_url_may_be_used(settings):
    settings.WEBHOOK_PRIVATE_ADDRESSES = False
    assert webhooks.url_problem("https://hooks.example.net/mail-events") is None
    assert webhooks.url_problem("https://192.0.2.10/x") is not None, "documentation addresses are not public"


def test_which_domains_have_webhooks_is_read_before_the_outcome_transaction_not_inside_it(
        transactional_db, bob, endpoint):
    """On SQLite the outcome's transaction holds the one writer lock every process waits for."""
    from django.db import connection

    hook(bob.domain, endpoint)
    enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    [token] = queue.claim_due()
    run, rows = queue.take_over(token)
    in_transaction = []

    def spy(execute, sql, params, many, context):
        if sql.startswith("SELECT") and "delivery_webhook" in sql:
            in_transaction.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        queue.record_delivered(run, rows, queue.Outcome("delivered", "250 2.0.0 ok", "TLSv1.3"))
    assert in_transaction == [False]
    event = WebhookEvent.objects.get()
    assert event.payload["attempts"] == 1 and event.payload["tls"] == "TLSv1.3"


def test_events_another_worker_holds_are_left_to_it_until_its_lease_runs_out(bob, endpoint):
    webhook = hook(bob.domain, endpoint)
    held = WebhookEvent.objects.create(webhook=webhook, payload={"event": "delivered"},
                                       lease_until=timezone.now() + dt.timedelta(minutes=10))
    assert webhooks.send_due() == 0 and endpoint.requests == []
    assert webhooks.send_due(timezone.now() + dt.timedelta(minutes=11)) == 1
    held.refresh_from_db()
    assert held.state == "sent" and len(endpoint.requests) == 1


def test_an_endpoint_that_trickles_its_answer_is_given_up_at_the_timeout(bob, endpoint, settings, tmp_path):
    (tmp_path / "trickle").mkdir()
    ca = CertificateAuthority(tmp_path / "trickle")
    settings.WEBHOOK_CA_FILE = str(ca.bundle)
    settings.WEBHOOK_TIMEOUT = 1
    slow = Trickler(ca.server_context("hooks.example.net"), pause=0.3)
    Webhook.objects.create(domain=bob.domain, url=f"https://hooks.example.net:{slow.port}/", events=["delivered"])
    enqueue("bob@example.org", ["someone@remote.test"], MESSAGE)
    run_queue()
    started = time.monotonic()
    webhooks.send_due()
    assert time.monotonic() - started < 3
    event = WebhookEvent.objects.get()
    assert event.state == "pending" and event.last_status.startswith("TimeoutError")


def test_a_run_stops_starting_requests_after_its_time_and_leaves_the_rest(bob, endpoint, monkeypatch):
    hook(bob.domain, endpoint)
    enqueue("bob@example.org", ["a@remote.test", "b@remote.test"], MESSAGE)
    run_queue()
    monkeypatch.setattr(webhooks, "RUN_SECONDS", -1)
    assert webhooks.send_due() == 2 and endpoint.requests == []
    assert list(WebhookEvent.objects.values_list("state", "attempts", "lease_until")) == [("pending", 0, None)] * 2
    monkeypatch.setattr(webhooks, "RUN_SECONDS", 30)
    assert webhooks.send_due() == 2 and len(endpoint.requests) == 2


def test_an_admin_sends_a_test_event_from_the_portal_and_sees_the_answer(client, alice, bob, endpoint):
    from django.urls import reverse

    webhook = hook(bob.domain, endpoint)
    client.force_login(alice)
    url = reverse("delivery:webhook_test", kwargs={"pk": bob.domain.pk, "webhook_pk": webhook.pk})
    page = client.post(url, follow=True).content.decode()
    assert "took the test event" in page
    [(headers, body)] = endpoint.requests
    assert json.loads(body)["event"] == "test" and signed_by(webhook.secret, headers, body)
    endpoint.status = 404
    page = client.post(url, follow=True).content.decode()
    assert "did not take the test event: HTTP 404" in page
    webhook.refresh_from_db()
    assert webhook.last_status == "HTTP 404"
