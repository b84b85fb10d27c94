"""Celery tasks: thin wrappers around delivery/queue.py and delivery/outbound.py.

No retry times live in the broker (no countdown/ETA: Redis redelivers long ETAs after the
visibility timeout). `dispatch_due` runs from beat every QUEUE_SWEEP_INTERVAL seconds and on a
kick after enqueue; it leases due rows per destination and sends one short `deliver` task per
batch. A lost `deliver` message leaves a lease that runs out, and the next sweep claims the rows.
"""

from __future__ import annotations

from celery import shared_task

from . import outbound, queue


@shared_task(name="delivery.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    tokens = queue.claim_due()
    for token in tokens:
        deliver.apply_async((token,), ignore_result=True)
    return len(tokens)


@shared_task(name="delivery.deliver", ignore_result=True)
def deliver(token: str) -> None:
    run, rows = queue.take_over(token)
    outbound.deliver_batch(run, rows)
