"""Celery tasks: thin wrappers around delivery/queue.py and delivery/outbound.py.

No retry times live in the broker (no countdown/ETA: Redis redelivers long ETAs after the
visibility timeout). `dispatch_due` runs from beat every QUEUE_SWEEP_INTERVAL seconds and on a
kick after enqueue; it leases due rows per destination, sends one short `deliver` task per
QUEUE_BATCHES_PER_TASK batches beyond the first such share, and delivers that one itself. A
lost `deliver` message leaves a lease that runs out, and the next sweep claims the rows.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from . import outbound, queue, retention, webhooks


def _batches_per_task() -> int:
    return max(1, getattr(settings, "QUEUE_BATCHES_PER_TASK", 10))


@shared_task(name="delivery.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Claim work for QUEUE_DISPATCH_TASKS deliver tasks; they drain whatever else is due, so a
    sweep (every kick and beat tick) need not lease the whole queue itself.

    The first task's share is delivered here, at once: a kick means "deliver now", and handing
    that share to the broker only to take it back cost a broker round trip (on the filesystem
    broker a poll of its folder, 0.1 s). Worse, kicks that had piled up behind two workers'
    drains were then run one after another, each leasing rows to deliver tasks queued behind
    the remaining kicks, and no mail moved until the last kick had run: a second without a
    delivery, mid-load, in the benchmark. Now the first kick taken drains the queue itself and
    the later ones find little to do.
    """
    tasks = max(1, getattr(settings, "QUEUE_DISPATCH_TASKS", 4))
    per_task = _batches_per_task()
    tokens = queue.claim_due(max_batches=tasks * per_task)
    for i in range(per_task, len(tokens), per_task):
        deliver.apply_async((tokens[i:i + per_task],), ignore_result=True)
    if tokens:
        deliver(tokens[:per_task])
    return len(tokens)


@shared_task(name="delivery.deliver", ignore_result=True)
def deliver(tokens: str | list[str]) -> None:
    """Deliver the claimed batches (a single token: a task queued before batches were grouped),
    then keep delivering whatever else is due for up to QUEUE_DRAIN_SECONDS."""
    run, rows = queue.take_over(tokens)
    outbound.deliver_batch(run, rows)
    outbound.deliver_due(getattr(settings, "QUEUE_DRAIN_SECONDS", 10.0), _batches_per_task())


@shared_task(name="delivery.send_webhooks", ignore_result=True)
def send_webhooks() -> int:
    """POST the delivery events that are due to their domains' webhooks (delivery/webhooks.py)."""
    return webhooks.send_due()


@shared_task(name="delivery.purge", ignore_result=True)
def purge() -> dict[str, int]:
    """Finished mail, old message-log rows and lapsed suppressions (delivery/retention.py)."""
    return retention.purge()
