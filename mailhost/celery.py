"""The Celery app: the worker executes work that queue rows describe; it holds no state."""

import os

from celery import Celery

from mailhost import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhost.settings")

broker.use_for_filesystem_urls()
app = Celery("mailhost")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="mailhost.ping")
def ping() -> str:
    """Answers through the broker and result backend: proves a worker is alive."""
    return "pong"
