"""Seed a database at portal scale: domains, mailboxes, message log rows and queue rows.

Everything is written with bulk_create in batches, one transaction per batch, and every account
shares one password hash computed once: hashing 100,000 argon2 passwords would take longer than
writing the rest. The rows are realistic enough for the list pages (each mailbox has log rows,
domains have admins), not for delivery.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from delivery.models import MessageLog, QueuedMessage, QueuedRecipient
from domains.models import Domain
from mailboxes.models import Alias, Mailbox, User

DIRECTIONS = ["inbound", "inbound", "submission", "outbound"]
RESULTS = ["accepted", "accepted", "delivered", "deferred", "refused"]


class Command(BaseCommand):
    help = "Seed many domains, mailboxes and log rows (for bench/portal and manual load tests)."

    def add_arguments(self, parser):
        parser.add_argument("--domains", type=int, default=1_000)
        parser.add_argument("--mailboxes", type=int, default=100_000, help="spread evenly over the domains")
        parser.add_argument("--aliases", type=int, default=10_000)
        parser.add_argument("--logs", type=int, default=1_000_000, help="message log rows")
        parser.add_argument("--queue", type=int, default=10_000, help="queued recipients")
        parser.add_argument("--batch", type=int, default=5_000)
        parser.add_argument("--prefix", default="seed", help="domains are named <prefix>00000.test …")
        parser.add_argument("--password", default="seed password", help="for every seeded account")

    def handle(self, **opt):
        if opt["domains"] < 1:
            raise CommandError("--domains must be at least 1")
        if Domain.objects.filter(name__startswith=opt["prefix"], name__endswith=".test").exists():
            raise CommandError(f"domains named {opt['prefix']}*.test exist already; use another --prefix")
        self.batch = opt["batch"]
        self.password = make_password(opt["password"])
        started = time.monotonic()
        domains = self._domains(opt["prefix"], opt["domains"])
        addresses = self._mailboxes(domains, opt["mailboxes"])
        self._aliases(domains, opt["aliases"])
        self._logs(domains, addresses, opt["logs"])
        self._queue(domains, opt["queue"])
        self.stdout.write(f"seeded in {time.monotonic() - started:.1f} s")

    def _chunks(self, n):
        for start in range(0, n, self.batch):
            yield range(start, min(n, start + self.batch))

    def _domains(self, prefix, n):
        names = [f"{prefix}{i:05d}.test" for i in range(n)]
        for chunk in self._chunks(n):
            Domain.objects.bulk_create([Domain(name=names[i]) for i in chunk])
        domains = list(Domain.objects.filter(name__in=names).order_by("name"))
        admin = User.objects.create(username=f"{prefix}-admin", password=self.password)
        root = User.objects.create(username=f"{prefix}-root", password=self.password, is_superuser=True,
                                   is_staff=True)
        domains[0].admins.add(admin)
        self.stdout.write(f"{n} domains; {admin.username} administers {domains[0].name}; {root.username} is superadmin")
        return domains

    def _mailboxes(self, domains, n):
        per = max(1, n // len(domains))
        addresses = []
        for chunk in self._chunks(n):
            with transaction.atomic():
                users = User.objects.bulk_create([
                    User(username=f"user{i // len(domains):05d}@{domains[i % len(domains)].name}",
                         password=self.password) for i in chunk])
                Mailbox.objects.bulk_create([
                    Mailbox(user=u, domain=domains[i % len(domains)], local_part=u.username.split("@")[0],
                            quota=1024**3, used_bytes=(i * 7919) % 1024**3)
                    for i, u in zip(chunk, users, strict=True)])
            addresses += [u.username for u in users]
        self.stdout.write(f"{n} mailboxes (~{per} per domain)")
        return addresses

    def _aliases(self, domains, n):
        for chunk in self._chunks(n):
            Alias.objects.bulk_create([
                Alias(domain=domains[i % len(domains)], local_part=f"alias{i // len(domains):05d}",
                      destinations=[f"user00000@{domains[i % len(domains)].name}"]) for i in chunk])
        self.stdout.write(f"{n} aliases")

    def _logs(self, domains, addresses, n):
        now = timezone.now()
        by_domain = {d.name: d for d in domains}
        for chunk in self._chunks(n):
            rows = []
            for i in chunk:
                address = addresses[i % len(addresses)] if addresses else f"user@{domains[i % len(domains)].name}"
                outgoing = i % 4 >= 2
                rows.append(MessageLog(
                    created_at=now - timedelta(seconds=i * 3), domain=by_domain[address.split("@")[1]],
                    direction=DIRECTIONS[i % 4], result=RESULTS[i % 5], queue_id=f"{i:016X}",
                    client_ip=f"192.0.2.{i % 250 + 1}",
                    mail_from=address if outgoing else f"sender{i % 997}@remote.test",
                    recipients=f"rcpt{i % 991}@remote.test" if outgoing else address,
                    subject=f"Message number {i}", size=1000 + i % 50_000, reply="250 2.0.0 OK"))
            with transaction.atomic():
                MessageLog.objects.bulk_create(rows)
        self.stdout.write(f"{n} message log rows")

    def _queue(self, domains, n):
        now = timezone.now()
        for chunk in self._chunks(n):
            with transaction.atomic():
                messages = QueuedMessage.objects.bulk_create([
                    QueuedMessage(queue_id=f"Q{i:015X}", sender=f"user00000@{domains[i % len(domains)].name}",
                                  data=b"Subject: queued\r\n\r\nbody\r\n", size=27,
                                  sender_domain=domains[i % len(domains)]) for i in chunk])
                QueuedRecipient.objects.bulk_create([
                    QueuedRecipient(message=m, address=f"far{i}@remote.test", domain="remote.test",
                                    state="deferred", attempts=i % 6, next_attempt_at=now + timedelta(minutes=i % 600),
                                    last_reply="451 4.7.1 greylisted, try again later")
                    for i, m in zip(chunk, messages, strict=True)])
        self.stdout.write(f"{n} queued recipients")
