"""The outbound queue: putting mail on it, claiming due recipients, and recording outcomes.

The database is the queue (DESIGN.md): Celery messages only say "look at the queue now".
Claiming is a conditional UPDATE that sets a lease (owner token + expiry) on rows that are due
and not leased, followed by reading back what this owner got — SQLite and PostgreSQL both honour
that, and on PostgreSQL `select_for_update(skip_locked=True)` first keeps concurrent claimers off
each other's rows. A worker that dies leaves a lease that simply runs out.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Case, Q, Value, When
from django.db.models.query import get_related_populators
from django.utils import timezone

from mailhost.addresses import parse_address

from . import webhooks
from .models import QueuedMessage, QueuedRecipient, Suppression

log = logging.getLogger(__name__)
State = QueuedRecipient.State

# Postfix waits 300 s first and Stalwart 2 min; doubling to 2 h then every 4 h keeps a
# greylisting peer (typically 5-15 min) cheap and a dead host from being hammered.
RETRY_SCHEDULE = (300, 600, 1200, 2400, 3600, 7200)
RETRY_AFTER_SCHEDULE = 4 * 3600


def _setting(name: str, default):
    return getattr(settings, name, default)


def enqueue(sender: str, recipients: list[str], data: bytes, *,
            source: str = QueuedMessage.Source.SUBMISSION, auth_user: str = "",
            original_recipients: dict[str, str] | None = None, prepared: bool = False) -> QueuedMessage:
    """Store one message and a row per recipient in one transaction.

    `data` is stored exactly as it will be sent: our own mail (every source but INBOUND) is
    prepared and DKIM-signed here, once; forwarded mail keeps its bytes and the original
    signatures, and gets an SRS envelope sender so SPF still passes at the next hop.
    `prepared`: the caller already ran `signing.prepare` on `data`.
    """
    from . import db_writes, signing, srs

    original_recipients = original_recipients or {}
    if source == QueuedMessage.Source.INBOUND:
        sender = srs.forward(sender)
    sender_domain = signing.hosted_domain(parse_address(sender).domain)[0] if sender else None
    if source != QueuedMessage.Source.INBOUND:
        data = signing.sign(data if prepared else signing.prepare(data))
    addresses = [(rcpt, parse_address(rcpt).domain) for rcpt in dict.fromkeys(recipients)]

    message = QueuedMessage(sender=sender, data=data, size=len(data), source=source, auth_user=auth_user,
                            sender_domain=sender_domain)
    # Column values made here, in the session's thread: the transaction (on SQLite, the one
    # writer lock every process queues for) then holds only the two statements.
    message_values = db_writes.row_values([message])
    rcpt_values = db_writes.new_row_values(QueuedRecipient, [
        {"message_id": None, "address": rcpt, "domain": domain, "original_address": original_recipients.get(rcpt, "")}
        for rcpt, domain in addresses])
    # In the SMTP service the insert joins db_writes' group commit (one writer thread, one
    # transaction for everything waiting) instead of every session thread queueing for SQLite's
    # writer lock; either way it is committed when this returns, before the 250. A failure in
    # a group fails the group, which db_writes then retries write by write.
    [values] = message_values
    message.pk = db_writes.insert_linked(QueuedMessage, values, QueuedRecipient, rcpt_values, "message")
    message._state.adding, message._state.db = False, "default"
    # In this thread, not the writer's: a slow broker must never hold up everyone's writes.
    # Inside a caller's transaction the kick still waits for its commit.
    if connection.in_atomic_block:
        transaction.on_commit(kick)
    else:
        kick()
    return message


_last_kick = 0.0
KICK_EXPIRES = 5.0
_kick_wanted = False
_kick_sending = False
_kick_changed = threading.Condition()
_kicker: threading.Thread | None = None


def kick() -> None:
    """Ask a worker to claim due rows now instead of at the next beat tick; returns at once.

    The kick goes to the broker from this process's kicker thread, never from the caller's:
    an SMTP session answers 250 (and a portal request returns) without waiting on the broker.
    A broker that accepts connections and never answers (a wedged Redis) used to hold the
    session that kicked until its client gave up, and a client that gives up on a message we
    had already queued sends it again. Without a broker at all the periodic sweep still finds
    the rows.

    Throttled per process to one kick every QUEUE_KICK_INTERVAL (one kick covers every row
    queued before it runs). Mail queued while the throttle holds gets one kick at the end of
    the interval: without it, the last messages of a burst waited for a worker still draining,
    or else for the beat sweep, seconds away. A kick not taken up within KICK_EXPIRES is dropped
    unrun: every worker was busy, and a busy worker keeps claiming what is due
    (`outbound.deliver_due`). Without the expiry, two submission processes kicking twice a
    second piled up dozens of sweeps behind each draining worker, each claiming anew.
    """
    global _kick_wanted, _kicker
    with _kick_changed:
        if _kicker is None or not _kicker.is_alive():
            _kicker = threading.Thread(target=_send_kicks, name="queue-kicker", daemon=True)
            _kicker.start()
        if not _kick_wanted:
            # Only news wakes the kicker: under load every message kicks, and waking it for each
            # one while it waits out the interval was a thread switch a message for nothing.
            _kick_wanted = True
            _kick_changed.notify()


def kick_now() -> None:
    """Kick from this thread, unthrottled: for a command that exits right after (`queue
    retry`), where a kicker thread could die with its kick unsent."""
    global _last_kick
    with _kick_changed:
        _last_kick = time.monotonic()
    _send_kick()


def _send_kicks() -> None:
    global _kick_wanted, _kick_sending, _last_kick
    while True:
        with _kick_changed:
            while not _kick_wanted:
                _kick_changed.wait()
            wait = _last_kick + settings.QUEUE_KICK_INTERVAL - time.monotonic()
            if wait > 0:
                _kick_changed.wait(wait)    # then look again: a cancel may have come meanwhile
                continue
            _kick_wanted, _kick_sending, _last_kick = False, True, time.monotonic()
        try:
            _send_kick()
        finally:
            with _kick_changed:
                _kick_sending = False
                _kick_changed.notify_all()


def _send_kick() -> None:
    try:
        from .tasks import dispatch_due

        dispatch_due.apply_async(retry=False, expires=KICK_EXPIRES)
    except Exception as exc:  # noqa: BLE001 - the sweep is the safety net
        log.warning("could not signal the queue worker: %s", exc)


def _forget_kicks_in_child() -> None:
    """A forked child (runsmtp's copies, prefork workers) starts without the parent's kicker
    thread, and perhaps with the parent's lock held by a thread it does not have."""
    global _kick_changed, _kicker, _kick_wanted, _kick_sending
    _kick_changed, _kicker, _kick_wanted, _kick_sending = threading.Condition(), None, False, False


os.register_at_fork(after_in_child=_forget_kicks_in_child)


def cancel_pending_kick(timeout: float = 10.0) -> None:
    """Drop a kick not sent yet, and let one being sent finish (tests: none reaches the broker
    during the next test)."""
    global _kick_wanted
    with _kick_changed:
        _kick_wanted = False
        _kick_changed.wait_for(lambda: not _kick_sending, timeout)


# -- a draining worker's pause ---------------------------------------------------------------
#
# A worker whose claim round came back short pauses DRAIN_GATHER_SECONDS so that mail gathers
# for the next round (outbound.deliver_due). At the end of a burst that pause was what the last
# messages waited for: 80-160 of them still queued at the last 250 took 0.2 s more to leave.
# So a pausing worker looks at the queue's newest message every QUIET_SECONDS: while mail keeps
# being queued it gathers for the whole pause, as before; once none has been for QUIET_SECONDS,
# the burst is over and it claims at once. The look is one read of the primary key's index, on
# either engine, and costs the submission path nothing (the eighteenth session's FIFO beside a
# SQLite database cost a write a message and left PostgreSQL with the plain sleep; LISTEN/NOTIFY
# would cost a statement a message and does not pass a transaction-pooling pgbouncer).

QUIET_SECONDS = 0.02


def newest_queued() -> int:
    """The primary key of the newest message on the queue (ids only grow: AUTOINCREMENT on
    SQLite, a sequence on PostgreSQL), 0 when it is empty."""
    with connection.cursor() as cursor:
        cursor.execute(_NEWEST_QUEUED_SQL)
        return cursor.fetchone()[0] or 0


_NEWEST_QUEUED_SQL = f"SELECT MAX({QueuedMessage._meta.pk.column}) FROM {QueuedMessage._meta.db_table}"


def gather_pause(seconds: float) -> None:
    """Wait up to `seconds` for mail to gather, less once nothing more is being queued."""
    deadline = time.monotonic() + seconds
    newest = newest_queued()    # mail the round just claimed does not count
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(QUIET_SECONDS, remaining))
        latest = newest_queued()
        if latest == newest:
            return
        newest = latest


# -- claiming -------------------------------------------------------------------------------

class _ClaimReads:
    """The statements of `claim_due`, in plain SQL that both engines run.

    A draining worker claims every fraction of a second, and the ORM compiling these four
    statements (a grouped read, a distinct count, a window function, a conditional UPDATE) cost
    ~7 ms a round, three times what running them did: a third of the worker's time.
    The conditions are `_due` and `_lease_free`'s, written out.
    """

    def __init__(self, now: dt.datetime):
        quote = connection.ops.quote_name
        self.table = quote(QueuedRecipient._meta.db_table)
        self.now = connection.ops.adapt_datetimefield_value(now)
        self.pending = list(QueuedRecipient.PENDING_STATES)
        self.due = (f"state IN ({', '.join(['%s'] * len(self.pending))}) AND next_attempt_at <= %s "
                    f"AND (lease_until IS NULL OR lease_until < %s)")
        self.due_params = [*self.pending, self.now, self.now]

    @staticmethod
    def _rows(sql: str, params: list) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    @staticmethod
    def _in(values: list) -> str:
        return f"({', '.join(['%s'] * len(values))})"

    def due_domains(self, most: int) -> list[str]:
        return [d for (d,) in self._rows(
            f"SELECT domain FROM {self.table} WHERE {self.due} GROUP BY domain "
            f"ORDER BY MIN(next_attempt_at) LIMIT %s", [*self.due_params, most])]

    def busy(self, domains: list[str]) -> dict[str, int]:
        """Per domain, how many owners hold live leases on its rows."""
        if not domains:
            return {}
        return dict(self._rows(
            f"SELECT domain, COUNT(DISTINCT lease_owner) FROM {self.table} WHERE domain IN {self._in(domains)} "
            f"AND lease_until > %s AND lease_owner <> '' GROUP BY domain", [*domains, self.now]))

    def oldest_rows(self, domains: list[str], per_domain: int) -> list[tuple]:
        """(id, domain, rank) of each domain's `per_domain` oldest due rows, by domain and rank."""
        return self._rows(
            f"SELECT id, domain, rank FROM (SELECT id, domain, ROW_NUMBER() OVER (PARTITION BY domain "
            f"ORDER BY next_attempt_at, id) AS rank FROM {self.table} WHERE {self.due} "
            f"AND domain IN {self._in(domains)}) AS ranked WHERE rank <= %s ORDER BY domain, rank",
            [*self.due_params, *domains, per_domain])

    def lease(self, ids: list[int], run: str, lease_until: dt.datetime) -> int:
        """Lease `ids` to `run`, in flight, where still pending and free; how many it got."""
        from . import db_writes

        return db_writes.execute(
            f"UPDATE {self.table} SET lease_owner = %s, lease_until = %s, state = %s "
            f"WHERE id IN {self._in(ids)} AND state IN {self._in(self.pending)} "
            f"AND (lease_until IS NULL OR lease_until < %s)",
            [run, connection.ops.adapt_datetimefield_value(lease_until), State.IN_FLIGHT, *ids,
             *self.pending, self.now])


def _due(now: dt.datetime):
    return QueuedRecipient.objects.filter(
        state__in=QueuedRecipient.PENDING_STATES, next_attempt_at__lte=now,
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))


def _lease_free(now: dt.datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def claim_batch(domain: str, now: dt.datetime | None = None, size: int | None = None) -> str | None:
    """Lease up to `size` due recipients of `domain` to a new owner token; None when none were had."""
    return _claim(domain, now or timezone.now(), size or _setting("QUEUE_BATCH_SIZE", 100))[0]


def _claim(domain: str, now: dt.datetime, size: int) -> tuple[str | None, int]:
    """The lease itself; also says how many rows it got, so a short batch ends the domain's round."""
    token = secrets.token_hex(12)
    lease_until = now + dt.timedelta(seconds=_setting("QUEUE_LEASE_SECONDS", 300))
    with transaction.atomic():
        candidates = _due(now).filter(domain=domain).order_by("next_attempt_at", "id")
        if connection.vendor == "postgresql":
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        ids = list(candidates.values_list("pk", flat=True)[:size])
        if not ids:
            return None, 0
        # The UPDATE re-checks the conditions, so its row count is what this owner really got.
        got = QueuedRecipient.objects.filter(pk__in=ids, state__in=QueuedRecipient.PENDING_STATES).filter(
            _lease_free(now)).update(lease_owner=token, lease_until=lease_until)
    return (token if got else None), got


def claim_due(now: dt.datetime | None = None, max_batches: int | None = None, *,
              run: str | None = None) -> list[str]:
    """Lease due rows per destination, at most QUEUE_DESTINATION_CONCURRENCY batches per domain.

    The candidates are read without a transaction (WAL readers take no lock) and every batch is
    then leased in one short write transaction: on SQLite the SMTP service and the worker share
    one writer lock, and a sweep that took it once per due domain kept submissions waiting. The
    UPDATE re-checks that its rows are due and unleased, so a concurrent claimer that got there
    first simply leaves a batch shorter (or empty) — on both engines. `max_batches` stops the
    sweep early (a worker draining the queue takes a few batches at a time).

    With `run` (a worker about to deliver what it claims) every batch goes to that run's own
    token and is marked in flight in the same UPDATE: what `take_over` and `start_attempt`
    would do next, without two more writes of every row. The list still has an entry (`run`)
    per batch claimed.
    """
    now = now or timezone.now()
    limit = _setting("QUEUE_DESTINATION_CONCURRENCY", 5)
    size = _setting("QUEUE_BATCH_SIZE", 100)
    reads = _ClaimReads(now)
    # Oldest due mail first: with `max_batches` a sweep serves only some domains, and none may
    # wait behind busier ones for ever.
    domains = reads.due_domains(500)
    busy = reads.busy(domains)
    slots = {d: limit - busy.get(d, 0) for d in domains if busy.get(d, 0) < limit}
    if max_batches:
        # Every domain takes at least one batch: the first max_batches of them are enough.
        slots = dict(list(slots.items())[:max_batches])
    if not slots:
        return []
    # One read for all chosen domains: each domain's oldest rows, numbered per domain so that
    # no domain brings more than its free slots can carry.
    rows = reads.oldest_rows(list(slots), max(slots.values(), default=0) * size)
    per_domain: dict[str, list[int]] = {}
    for pk, domain, n in rows:
        if n <= slots[domain] * size:
            per_domain.setdefault(domain, []).append(pk)
    batches: list[list[int]] = []
    for domain in slots:
        ids = per_domain.get(domain, [])
        batches += [ids[i:i + size] for i in range(0, len(ids), size)]
    if max_batches:
        batches = batches[:max_batches]
    if not batches:
        return []
    lease_until = now + dt.timedelta(seconds=_setting("QUEUE_LEASE_SECONDS", 300))
    if run:
        from . import db_writes

        # A lease lost in a power cut only hands the rows out again, like a lost outcome (and
        # the WAL keeps order: the outcomes of these rows cannot outlive it), so no flush.
        with db_writes.atomic_unflushed():
            got = reads.lease([pk for ids in batches for pk in ids], run, lease_until)
        return [run] * len(batches) if got else []
    tokens = [secrets.token_hex(12) for _ in batches]
    owner = Case(*(When(pk__in=ids, then=Value(token)) for ids, token in zip(batches, tokens, strict=True)),
                 default=Value(""))
    # One UPDATE gives every batch its own token; it re-checks the conditions, and the tokens
    # that got rows are read back in the same transaction.
    with transaction.atomic():
        got = QueuedRecipient.objects.filter(
            pk__in=[pk for ids in batches for pk in ids], state__in=QueuedRecipient.PENDING_STATES,
        ).filter(_lease_free(now)).update(lease_owner=owner, lease_until=lease_until)
        if got == sum(map(len, batches)):
            return tokens
        held = set(QueuedRecipient.objects.filter(lease_owner__in=tokens).values_list("lease_owner", flat=True))
    return [t for t in tokens if t in held]


def take_over(tokens: str | list[str]) -> tuple[str, list[QueuedRecipient]]:
    """Move one or several claimed batches to this run's own token.

    If the broker delivers the same task twice, only the first run gets the rows; the second
    finds nothing to do. Rows whose lease ran out were not ours any more and are left alone.
    Several batches (one task carries the batches of many domains) move in one UPDATE.
    """
    run = secrets.token_hex(12)
    now = timezone.now()
    tokens = [tokens] if isinstance(tokens, str) else list(tokens)
    QueuedRecipient.objects.filter(lease_owner__in=tokens, lease_until__gt=now,
                                   state__in=QueuedRecipient.PENDING_STATES).update(lease_owner=run)
    return run, rows_of(run)


def _rows_of_queryset(run: str):
    return (QueuedRecipient.objects.select_related("message", "message__sender_domain")
            .filter(lease_owner=run).order_by("domain", "message_id", "id"))


class _CompiledRead:
    """A queryset compiled once per database connection and run again with a new value.

    Django compiles a queryset's SQL on every evaluation. `rows_of` runs after every claim of a
    draining worker with only the run token changing, and compiling its three-table read (the
    joins, the select-related columns, the ordering) took a quarter of the worker's samples,
    more than running it. The statement, its columns, their converters and the populators of
    the related rows are kept; rows still become instances through Django's own compiler and
    populators, so the result is exactly the queryset's. `build(value)` must give a queryset
    whose only parameter is `value`.
    """

    def __init__(self, build):
        self.build = build
        # Kept on the connection itself: what is kept refers to it (the compiler, the backend's
        # converters), so a weak mapping keyed by it would never let it go.
        self.attribute = f"_compiled_read_{build.__name__}"

    def __call__(self, value) -> list:
        conn = connections[DEFAULT_DB_ALIAS]
        compiled = getattr(conn, self.attribute, None)
        if compiled is None:
            compiled = self._compile(conn)
            setattr(conn, self.attribute, compiled)
        if compiled is _UNCOMPILED:
            return list(self.build(value))
        sql, compiler, converters, model, init_list, start, end, populators = compiled
        with conn.cursor() as cursor:
            cursor.execute(sql, [value])
            rows = cursor.fetchall()
        if converters:
            rows = compiler.apply_converters(rows, converters)
        objs = []
        for row in rows:
            obj = model.from_db(DEFAULT_DB_ALIAS, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            objs.append(obj)
        return objs

    def _compile(self, conn):
        mark = f"compiled-read-{secrets.token_hex(8)}"
        queryset = self.build(mark)
        compiler = queryset.query.get_compiler(connection=conn)
        sql, params = compiler.as_sql()
        if list(params) != [mark] or queryset._known_related_objects or compiler.annotation_col_map:
            return _UNCOMPILED  # not a shape this class repeats faithfully: the queryset runs as is
        select, klass_info = compiler.select, compiler.klass_info
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        converters = compiler.get_converters([s[0] for s in select[:compiler.col_count]])
        return (sql, compiler, converters, klass_info["model"], [f[0].target.attname for f in select[start:end]],
                start, end, get_related_populators(klass_info, select, DEFAULT_DB_ALIAS))


_UNCOMPILED = object()
_rows_of = _CompiledRead(_rows_of_queryset)


def rows_of(run: str) -> list[QueuedRecipient]:
    """The rows a run holds, with their messages, in delivery order."""
    return _rows_of(run)


def start_attempt(run: str, ids: list[int]) -> list[int]:
    """Mark rows in flight just before talking to the peer; returns the ids still ours."""
    now = timezone.now()
    lease_until = now + dt.timedelta(seconds=_setting("QUEUE_LEASE_SECONDS", 300))
    updated = QueuedRecipient.objects.filter(
        pk__in=ids, lease_owner=run, state__in=QueuedRecipient.PENDING_STATES,
    ).update(state=State.IN_FLIGHT, lease_until=lease_until)
    if updated == len(ids):
        return list(ids)
    return list(QueuedRecipient.objects.filter(pk__in=ids, lease_owner=run, state=State.IN_FLIGHT)
                .values_list("pk", flat=True))


# -- outcomes -------------------------------------------------------------------------------

@dataclass
class Outcome:
    kind: str          # delivered | deferred | bounced
    reply: str
    tls_version: str = ""


def retry_delay(attempts: int) -> int:
    """Seconds to wait after the `attempts`-th failed attempt."""
    if attempts <= len(RETRY_SCHEDULE):
        return RETRY_SCHEDULE[max(attempts, 1) - 1]
    return RETRY_AFTER_SCHEDULE


def record(run: str, rcpt: QueuedRecipient, outcome: Outcome) -> None:
    """Write one recipient's outcome at once (a delivered row is committed before anything else)."""
    from . import dsn

    now = timezone.now()
    rcpt.attempts += 1
    rcpt.last_reply = outcome.reply[:2000]
    rcpt.lease_owner, rcpt.lease_until = "", None
    if outcome.tls_version:
        rcpt.tls_version = outcome.tls_version
    notify = None
    if outcome.kind == "delivered":
        rcpt.state, rcpt.delivered_at = State.DELIVERED, now
    elif outcome.kind == "bounced":
        rcpt.state, notify = State.BOUNCED, "failed"
        _suppress(rcpt, outcome.reply)
    else:
        expires = rcpt.message.created_at + dt.timedelta(seconds=settings.QUEUE_LIFETIME)
        next_at = now + dt.timedelta(seconds=retry_delay(rcpt.attempts))
        if now >= expires:
            rcpt.state, notify = State.EXPIRED, "failed"
        else:
            rcpt.state, rcpt.next_attempt_at = State.DEFERRED, min(next_at, expires)
            warn_after = rcpt.message.created_at + dt.timedelta(seconds=settings.QUEUE_DELAY_WARNING)
            if not rcpt.delay_warned and now >= warn_after:
                rcpt.delay_warned, notify = True, "delayed"
    # The outcome and its portal log row commit together: one commit (one fsync on PostgreSQL)
    # per recipient instead of two. A DSN comes after, as its own queued message.
    events = webhooks.events_for([rcpt], str(rcpt.state), rcpt.last_reply, outcome.tls_version)
    with transaction.atomic():
        updated = QueuedRecipient.objects.filter(pk=rcpt.pk, lease_owner=run).update(
            state=rcpt.state, attempts=rcpt.attempts, last_reply=rcpt.last_reply, lease_owner="",
            lease_until=None, tls_version=rcpt.tls_version, delivered_at=rcpt.delivered_at,
            next_attempt_at=rcpt.next_attempt_at, delay_warned=rcpt.delay_warned,
        )
        _log(rcpt, outcome)
        if updated:
            webhooks.save(events)
    if updated and notify:
        try:
            if dsn.send(rcpt, notify):
                QueuedRecipient.objects.filter(pk=rcpt.pk).update(dsn_sent=True)
        except Exception:
            log.exception("could not make a DSN for %s in %s", rcpt.address, rcpt.message.queue_id)


def record_delivered(run: str, rcpts: list[QueuedRecipient], outcome: Outcome) -> None:
    """The common case of `record`: every recipient of one message accepted with one reply.

    One UPDATE and one multi-row log INSERT in one transaction (on PostgreSQL one statement,
    see `db_writes.unflushed_statements`), committed the moment the peer
    answered the final dot, as `record` does row by row: the duplicate window stays one round
    trip wide (for a worker killed at any point; a power cut may repeat the last deliveries).
    No DSN, no suppression and no retry arithmetic apply to a delivery.
    """
    from . import db_writes
    from .models import MessageLog

    now = timezone.now()
    reply = outcome.reply[:2000]
    log_values = db_writes.new_row_values(MessageLog, [
        {"created_at": now, "domain_id": r.message.sender_domain_id, "direction": MessageLog.Direction.OUTBOUND.value,
         "result": MessageLog.Result.DELIVERED.value, "queue_id": r.message.queue_id, "mail_from": r.message.sender,
         "recipients": r.address, "size": r.message.size, "tls": outcome.tls_version, "reply": reply}
        for r in rcpts if r.message.sender_domain_id is not None])
    # Statement and values made before the transaction: on SQLite it holds the writer lock
    # that every process queues for, and the ORM compiling an UPDATE held it three times longer.
    quote = connection.ops.quote_name
    ids = [r.pk for r in rcpts]
    sets = "state = %s, attempts = attempts + 1, last_reply = %s, lease_owner = '', lease_until = NULL, " \
           "delivered_at = %s" + (", tls_version = %s" if outcome.tls_version else "")
    params = [State.DELIVERED, reply, connection.ops.adapt_datetimefield_value(now)]
    params += [outcome.tls_version] if outcome.tls_version else []
    sql = (f"UPDATE {quote(QueuedRecipient._meta.db_table)} SET {sets} "
           f"WHERE lease_owner = %s AND id IN ({', '.join(['%s'] * len(ids))})")
    events = webhooks.events_for(rcpts, "delivered", reply, outcome.tls_version, attempts_added=1)
    statements = [(sql, [*params, run, *ids])]
    if log_values:
        statements.append(db_writes.insert_statement(MessageLog, log_values))
    # Committed without waiting for the disk: a power cut may repeat a delivery, a worker
    # killed at any point may not. On PostgreSQL, without webhook events, one statement.
    db_writes.unflushed_statements(statements, also=(lambda: webhooks.save(events)) if events else None)
    for r in rcpts:
        r.state, r.delivered_at, r.last_reply = State.DELIVERED, now, reply
        r.attempts += 1
        r.lease_owner, r.lease_until = "", None
        r.tls_version = outcome.tls_version or r.tls_version


def release(run: str, ids: list[int]) -> None:
    """Give rows back untouched (e.g. the destination's connection limit was reached)."""
    QueuedRecipient.objects.filter(pk__in=ids, lease_owner=run).update(
        lease_owner="", lease_until=None, state=State.QUEUED)


def _suppress(rcpt: QueuedRecipient, reply: str) -> None:
    domain = rcpt.message.sender_domain
    # Only a peer's 5xx about the address says it does not exist; our own refusals do not.
    if domain is None or not reply[:1] == "5" or "suppressed" in reply:
        return
    days = _setting("SUPPRESSION_DAYS", 30)
    Suppression.objects.update_or_create(
        domain=domain, address=rcpt.address.lower(),
        defaults={"reason": reply[:500], "created_at": timezone.now(),
                  "expires_at": timezone.now() + dt.timedelta(days=days)},
    )


def _log(rcpt: QueuedRecipient, outcome: Outcome) -> None:
    from .models import MessageLog

    domain = rcpt.message.sender_domain
    if domain is None:
        return
    result = {"delivered": MessageLog.Result.DELIVERED, "bounced": MessageLog.Result.BOUNCED}.get(
        outcome.kind, MessageLog.Result.EXPIRED if rcpt.state == State.EXPIRED else MessageLog.Result.DEFERRED)
    MessageLog.objects.create(
        domain=domain, direction=MessageLog.Direction.OUTBOUND, result=result,
        queue_id=rcpt.message.queue_id, mail_from=rcpt.message.sender, recipients=rcpt.address,
        size=rcpt.message.size, tls=outcome.tls_version, reply=outcome.reply[:2000],
    )


# -- operator actions (`manage.py queue`) ------------------------------------------------------

def retry_now(queue_id: str) -> int:
    """Make every pending recipient of a message due now; returns how many."""
    return QueuedRecipient.objects.filter(
        message__queue_id=queue_id, state__in=QueuedRecipient.PENDING_STATES,
    ).filter(_lease_free(timezone.now())).update(next_attempt_at=timezone.now(), state=State.QUEUED)


def retry_all() -> int:
    """Every pending recipient due now (Postfix's `postqueue -f`), e.g. after an outage of the
    network or of a big receiver; recipients a worker holds right now are left to it."""
    return QueuedRecipient.objects.filter(state__in=QueuedRecipient.PENDING_STATES).filter(
        _lease_free(timezone.now())).update(next_attempt_at=timezone.now(), state=State.QUEUED)


def delete(queue_id: str) -> bool:
    deleted, _ = QueuedMessage.objects.filter(queue_id=queue_id).delete()
    return bool(deleted)


def delete_from(sender: str) -> int:
    """Delete every message from one envelope sender that still has recipients to deliver: a
    compromised account's flood. Returns how many messages; no DSN is sent."""
    waiting = QueuedMessage.objects.filter(sender__iexact=sender, recipients__state__in=QueuedRecipient.PENDING_STATES)
    ids = list(waiting.values_list("pk", flat=True).distinct())
    QueuedMessage.objects.filter(pk__in=ids).delete()
    return len(ids)
