"""A Celery round trip through the configured broker and a real worker process (not eager)."""

from mailhost.celery import ping


def test_a_task_travels_through_the_broker_to_a_worker_and_back(celery_worker_process):
    result = ping.delay()
    assert result.get(timeout=60) == "pong"
