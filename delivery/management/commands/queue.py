"""`manage.py queue [list | retry ID | delete ID | show ID]`: inspect and act on the outbound queue.

The operator's tools of Postfix's postqueue, postsuper and postcat: list what waits, flush it
(`retry --all`), drop one message or a compromised sender's whole flood (`delete --sender`), and
read a message's envelope and header to see why it waits.
"""

from __future__ import annotations

import re

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from delivery import queue
from delivery.models import QueuedMessage, QueuedRecipient


class Command(BaseCommand):
    help = "List the outbound queue, retry or delete a message (or all / a sender's), show one."

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", default="list", choices=["list", "retry", "delete", "show"])
        parser.add_argument("queue_id", nargs="?", help="the queue ID shown by `queue list`")
        parser.add_argument("--all", action="store_true",
                            help="list: delivered and bounced recipients too; retry: every pending message")
        parser.add_argument("--sender", metavar="ADDRESS",
                            help="list or delete only the messages from this envelope sender")
        parser.add_argument("--body", action="store_true", help="show: the whole message, not just its header")

    def handle(self, *args, action: str, queue_id: str | None, **options):
        if action == "list":
            return self._list(options["all"], options["sender"])
        if action == "retry" and options["all"] and not queue_id:
            n = queue.retry_all()
            queue.kick_now()
            self.stdout.write(f"{n} recipient(s) due now")
            return
        if action == "delete" and options["sender"] and not queue_id:
            n = queue.delete_from(options["sender"])
            self.stdout.write(f"{n} message(s) from <{options['sender']}> deleted")
            return
        if not queue_id:
            whole = {"retry": " (or --all)", "delete": " (or --sender ADDRESS)"}.get(action, "")
            raise CommandError(f"queue {action} needs a queue ID{whole} (see `queue list`)")
        if options["all"] or options["sender"]:
            raise CommandError(f"queue {action}: give a queue ID or a filter, not both")
        queue_id = queue_id.upper()
        message = QueuedMessage.objects.filter(queue_id=queue_id).first()
        if message is None:
            raise CommandError(f"no queued message {queue_id}")
        if action == "show":
            self._show(message, options["body"])
        elif action == "retry":
            n = queue.retry_now(queue_id)
            queue.kick_now()
            self.stdout.write(f"{queue_id}: {n} recipient(s) due now")
        else:
            queue.delete(queue_id)
            self.stdout.write(f"{queue_id}: deleted")

    def _list(self, show_all: bool, sender: str | None) -> None:
        # Never the message bytes (a queue after an outage can hold gigabytes), and in chunks.
        rows = QueuedRecipient.objects.select_related("message").defer("message__data").order_by(
            "message__created_at", "id")
        if not show_all:
            rows = rows.filter(state__in=QueuedRecipient.PENDING_STATES)
        if sender:
            rows = rows.filter(message__sender__iexact=sender)
        now = timezone.now()
        count = 0
        for r in rows.iterator(chunk_size=2000):
            count += 1
            due = "now" if r.next_attempt_at <= now else r.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S")
            self.stdout.write(
                f"{r.message.queue_id}  {r.message.created_at:%Y-%m-%d %H:%M}  <{r.message.sender}>  "
                f"{r.address}  {r.state}  attempts={r.attempts}  next={due}  {r.last_reply[:80]}"
            )
        if not count:
            self.stdout.write("queue is empty" if not sender else f"nothing queued from <{sender}>")

    def _show(self, message: QueuedMessage, body: bool) -> None:
        self.stdout.write(f"queue id: {message.queue_id}\ncreated: {message.created_at:%Y-%m-%d %H:%M:%S %Z}\n"
                          f"sender: <{message.sender}>\nsize: {message.size} bytes\nrecipients:")
        for r in message.recipients.order_by("id"):
            tls = f"  tls={r.tls_version}" if r.tls_version else ""
            self.stdout.write(f"  {r.address}  {r.state}  attempts={r.attempts}  "
                              f"next={r.next_attempt_at:%Y-%m-%d %H:%M:%S}{tls}  {r.last_reply}")
        data = bytes(message.data)
        if not body:
            data = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0] + b"\n"
        self.stdout.write("")
        self.stdout.write(data.decode("utf-8", "replace").replace("\r\n", "\n"), ending="")
