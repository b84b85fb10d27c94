"""Celery tasks: thin wrappers around delivery/queue.py and delivery/outbound.py.

No retry times live in the broker (no countdown/ETA: Redis redelivers long ETAs after the
visibility timeout). `dispatch_due` runs from beat every QUEUE_SWEEP_INTERVAL seconds and on a
kick after enqueue; it leases one task's share of the due rows per destination and delivers
it itself, and when more is due sends `deliver` tasks that wake other workers to claim the
rest. Those tasks carry no leases: a lost one costs nothing, the rows stay claimable.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from . import outbound, queue, retention, webhooks


def _batches_per_task() -> int:
    return max(1, getattr(settings, "QUEUE_BATCHES_PER_TASK", 10))


@shared_task(name="delivery.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Deliver what is due, waking up to QUEUE_DISPATCH_TASKS - 1 more workers when there is
    more than one task's share; returns how many batches this task delivered.

    The sweep leases only what it delivers itself, at once: a kick means "deliver now", and
    handing work to the broker only to take it back cost a broker round trip (on the
    filesystem broker a poll of its folder, 0.1 s). The tasks it sends carry no leases, only
    the word that there is more to do; each claims what is due when a worker runs it. Until the
    fifteenth session they carried rows leased to them, and under load those tasks waited in
    the broker behind the kicks that had piled up while every worker was draining: the rows
    were leased, so the draining workers could not take them, and the last few hundred
    messages of the benchmark sat there for up to a second after everything else had gone.
    """
    tasks = max(1, getattr(settings, "QUEUE_DISPATCH_TASKS", 4))
    per_task = _batches_per_task()
    run, claimed = outbound.claim_round(per_task)
    if not claimed:
        return 0
    if claimed >= per_task:
        for _ in range(tasks - 1):
            deliver.apply_async(([],), ignore_result=True, expires=queue.KICK_EXPIRES)
    outbound.deliver_claimed(run)
    return claimed + outbound.deliver_due(_drain_seconds(), per_task)


@shared_task(name="delivery.deliver", ignore_result=True)
def deliver(tokens: str | list[str]) -> None:
    """Deliver whatever is due for up to QUEUE_DRAIN_SECONDS; first the batches leased to
    `tokens`, if any (tasks queued by a sweep before the fifteenth session carried some; a
    single token: before batches were grouped)."""
    if tokens:
        run, rows = queue.take_over(tokens)
        outbound.deliver_batch(run, rows)
    outbound.deliver_due(_drain_seconds(), _batches_per_task())


def _drain_seconds() -> float:
    return getattr(settings, "QUEUE_DRAIN_SECONDS", 10.0)


@shared_task(name="delivery.send_webhooks", ignore_result=True)
def send_webhooks() -> int:
    """POST the delivery events that are due to their domains' webhooks (delivery/webhooks.py)."""
    return webhooks.send_due()


@shared_task(name="delivery.purge", ignore_result=True)
def purge() -> dict[str, int]:
    """Finished mail, old message-log rows and lapsed suppressions (delivery/retention.py)."""
    return retention.purge()
