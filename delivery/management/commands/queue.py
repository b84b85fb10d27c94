"""`manage.py queue [list | retry ID | delete ID]`: inspect and act on the outbound queue."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from delivery import queue
from delivery.models import QueuedMessage, QueuedRecipient


class Command(BaseCommand):
    help = "List the outbound queue, retry a message now, or delete it."

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", default="list", choices=["list", "retry", "delete"])
        parser.add_argument("queue_id", nargs="?", help="the queue ID shown by `queue list`")
        parser.add_argument("--all", action="store_true", help="list delivered and bounced recipients too")

    def handle(self, *args, action: str, queue_id: str | None, **options):
        if action == "list":
            return self._list(options["all"])
        if not queue_id:
            raise CommandError(f"queue {action} needs a queue ID (see `queue list`)")
        queue_id = queue_id.upper()
        if not QueuedMessage.objects.filter(queue_id=queue_id).exists():
            raise CommandError(f"no queued message {queue_id}")
        if action == "retry":
            n = queue.retry_now(queue_id)
            queue.kick()
            self.stdout.write(f"{queue_id}: {n} recipient(s) due now")
        else:
            queue.delete(queue_id)
            self.stdout.write(f"{queue_id}: deleted")

    def _list(self, show_all: bool) -> None:
        rows = QueuedRecipient.objects.select_related("message").order_by("message__created_at", "id")
        if not show_all:
            rows = rows.filter(state__in=QueuedRecipient.PENDING_STATES)
        now = timezone.now()
        count = 0
        for r in rows:
            count += 1
            due = "now" if r.next_attempt_at <= now else r.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S")
            self.stdout.write(
                f"{r.message.queue_id}  {r.message.created_at:%Y-%m-%d %H:%M}  <{r.message.sender}>  "
                f"{r.address}  {r.state}  attempts={r.attempts}  next={due}  {r.last_reply[:80]}"
            )
        if not count:
            self.stdout.write("queue is empty")
