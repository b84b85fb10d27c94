"""/healthz for load balancers and /metrics for Prometheus."""

from delivery.queue import enqueue


def test_healthz_reports_the_database_reachable(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_metrics_show_queue_depth_by_state_in_prometheus_format(client, bob):
    enqueue("bob@example.org", ["x@remote.test", "y@remote.test"], b"Subject: hi\r\n\r\nhi\r\n")
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.content.decode()
    assert 'mailhost_queue_recipients{state="queued"} 2' in body
    assert 'mailhost_domains{active="true"} 1' in body
    assert "mailhost_mailboxes 1" in body


def test_metrics_are_refused_to_remote_clients_without_the_token(client, db, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    ok = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret")
    assert ok.status_code == 200


def test_static_files_are_served_in_production_after_collectstatic(db, settings, tmp_path):
    """With DEBUG off runserver's static view is gone; whitenoise serves the collected files
    (the admin's CSS, the portal's, the API docs' Swagger UI) from the app server itself."""
    from django.core.management import call_command
    from django.test import Client

    settings.STATIC_ROOT = tmp_path / "static"
    settings.DEBUG = False
    call_command("collectstatic", "--noinput", verbosity=0)
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])
    assert Client().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200
