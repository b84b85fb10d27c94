"""The SMTP service's bookkeeping writes (quota counters, message-log rows): many per second.

Every accepted message costs two tiny writes. One transaction each meant, on SQLite, sixteen
worker threads racing for its single writer lock and sleeping in its busy handler with growing
back-off (1, 2, 5 ... 100 ms) although each write takes a fraction of a millisecond; and on
PostgreSQL one WAL flush per write. In the service they go to one writer thread that commits
everything waiting in one transaction (group commit): the quota increments of a batch as one
`executemany` UPDATE, its log rows as one INSERT per model.

`add_used_bytes` and `insert` are written *behind* the SMTP reply: the message itself is durable
(fsynced Maildir file or committed queue row) before the 250, but its bookkeeping is not
waited for. Waiting cost more than everything else per message once two service processes
shared an SQLite file (each commit waits out the other's lock in SQLite's sleeping busy
handler), and what it protected is not mail: the writer commits within milliseconds, is drained
on shutdown, a kill -9 can lose only the last batch of log rows and counter increments, and the
periodic usage recount (mailboxes/usage.py) puts counters right from the Maildir. `run` is for
writes whose result the caller needs: it waits. Outside the service (webmail, commands, tests)
every write runs directly.

Bookkeeping alone does not start a commit at once: it waits up to BOOKKEEPING_DELAY for a
write someone waits on (the next queued message) and rides in that one's commit. On SQLite
every commit holds the one writer lock that all processes share for an fsync; a log row in a
commit of its own had made it 1.4 commits per message.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import queue
import re
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections, models, transaction

from mailhost.threads import name_native_thread

log = logging.getLogger("mailhost.smtp")
MAX_BATCH = 500
BOOKKEEPING_DELAY = 0.2
_sqlite_writer = threading.Lock()
_writer: Writer | None = None


class _Call:
    """Any write: fn(*args, **kwargs) in the batch's transaction."""

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self):
        return self.fn(*self.args, **self.kwargs)


class _AddUsedBytes:
    def __init__(self, mailbox_id: int, delta: int):
        self.mailbox_id, self.delta = mailbox_id, delta

    def __call__(self):
        _add_used_bytes({self.mailbox_id: self.delta})


class _Insert:
    """Rows of one model, their column values made in the caller's thread: the writer then
    holds the transaction (on SQLite, the lock every process queues for) for the INSERT alone."""

    def __init__(self, model, rows: list[list]):
        self.model, self.rows = model, rows

    def __call__(self):
        insert_values(self.model, self.rows)


class _InsertLinked:
    """One row and rows of another model that point at it (a queued message and its
    recipients), inserted together; the result is the new row's primary key.

    On PostgreSQL one statement (`_linked_parts`): the INSERT ... RETURNING of the row and the
    INSERT of the rows that take its key from it, without the round trip that waited for the
    key in between, nor, outside a transaction, a BEGIN and a COMMIT around them."""

    def __init__(self, model, row: list, linked_model, linked_rows: list[list], link: str):
        self.model, self.row = model, row
        self.linked_model, self.linked_rows = linked_model, linked_rows
        self.link = column_index(linked_model, link)

    def __call__(self) -> int:
        conn = connections[DEFAULT_DB_ALIAS]
        if conn.vendor == "postgresql" and _fit_one_statement([self]):
            (_, pk), = _run_as_one_statement([self], conn)
            return pk
        with atomic_unless_in_one():
            pk = insert_values(self.model, [self.row], returning_pk=True)
            for row in self.linked_rows:
                row[self.link] = pk
            insert_values(self.linked_model, self.linked_rows)
        return pk


def insert_linked(model, row: list, linked_model, linked_rows: list[list], link: str) -> int:
    """INSERT a row made by `row_values` and rows of `linked_model` whose foreign key `link`
    is to take the new row's key (left as None in them); committed before this returns (in the
    SMTP service, in its group commit); the new row's primary key."""
    return _submit(_InsertLinked(model, row, linked_model, linked_rows, link), wait=True)


def _add_used_bytes(deltas: dict[int, int]) -> None:
    from mailboxes.models import Mailbox

    table = connection.ops.quote_name(Mailbox._meta.db_table)
    _executemany(f"UPDATE {table} SET used_bytes = used_bytes + %s WHERE id = %s",
                 [(delta, pk) for pk, delta in sorted(deltas.items())])


@functools.cache
def _insert_sql(model, vendor: str) -> tuple[list, str]:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    return fields, (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
                    f"VALUES ({', '.join(['%s'] * len(fields))})")


def row_values(objs: list) -> list[list]:
    """The column values of unsaved instances (all of one model), as `insert_values` takes them.

    Computed before the transaction, so that on SQLite the one writer lock is held for the
    statements alone and not for Python turning model fields into database values.
    """
    if not objs:
        return []
    conn, fields, attnames, plan = _conversion_plan(type(objs[0]))
    rows = []
    for obj in objs:
        row = []
        for f, attname, step in zip(fields, attnames, plan, strict=True):
            value = _fast_value(getattr(obj, attname), *step)
            if value is _SLOW:
                value = f.get_db_prep_save(f.pre_save(obj, True), conn)
            row.append(value)
        rows.append(row)
    return rows


def new_row_values(model, records: list[dict]) -> list[list]:
    """`row_values` for rows given as {attname: value} (a foreign key as `domain_id`), the
    rest from the fields' defaults, without building model instances: Model.__init__ (its
    signals, descriptors and per-field defaults) was a tenth of a delivery worker's time where
    it made one log row per delivered message. Fields that set themselves on save (auto_now)
    need an instance: `row_values`."""
    conn, fields, attnames, plan = _conversion_plan(model)
    columns, sets_itself = _record_columns(model, conn.vendor)
    if sets_itself:
        raise TypeError(f"{model.__name__}.{sets_itself[0]} sets itself on save: use row_values")
    unknown = set().union(*records) - columns if records else set()
    if unknown:
        raise TypeError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    rows = []
    for record in records:
        row = []
        for f, attname, step in zip(fields, attnames, plan, strict=True):
            given = record[attname] if attname in record else f.get_default()
            value = _fast_value(given, *step)
            if value is _SLOW:
                value = f.get_db_prep_save(given, conn)
            row.append(value)
        rows.append(row)
    return rows


@functools.cache
def _record_columns(model, vendor: str) -> tuple[frozenset, list[str]]:
    """The attnames `new_row_values` takes for `model`, and the fields that set themselves on save."""
    fields, _ = _insert_sql(model, vendor)
    return (frozenset(f.attname for f in fields),
            [f.name for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)])


_SLOW = object()


def _conversion_plan(model) -> tuple:
    """(this thread's connection, the model's insert columns, their attnames, per column (exact
    type, adapter, its arguments)). Kept on the connection (the adapters are its own): made
    afresh for every row, through Django's connection proxy, it was a third of the time of
    turning a message's log row into values."""
    conn = connections[DEFAULT_DB_ALIAS]
    plans = conn.__dict__.setdefault("_mailhost_conversion_plans", {})
    plan = plans.get(model)
    if plan is None:
        fields, _ = _insert_sql(model, conn.vendor)
        steps = [(kind, getattr(conn.ops, adapter) if adapter else None, args)
                 for kind, adapter, args in _shortcuts(model, conn.vendor)]
        plan = plans[model] = (fields, [f.attname for f in fields], steps)
    return (conn, *plan)


def _fast_value(value, kind, adapt, args):
    """The database value by the shortcut of `_shortcuts`, or _SLOW where Django's path must run."""
    if value is None and kind is not None:
        return None
    if type(value) is not kind or (kind is dt.datetime and value.tzinfo is None):
        return _SLOW
    return value if adapt is None else adapt(value, *args)


# Columns whose value Django's field layers would only check and hand to the backend's adapter:
# text (str as it is), keys (int as it is), numbers (int, through the adapter: psycopg type
# hints on PostgreSQL), booleans and aware datetimes. Going through get_db_prep_save for every
# column of every row was a twelfth of the SMTP service's time. None stays None. Anything else
# (binary, IP addresses, naive datetimes, a value of another type, auto_now) takes Django's path.
_TEXT = (models.CharField, models.TextField)
_NUMBERS = (models.IntegerField, models.PositiveIntegerField, models.BigIntegerField,
            models.PositiveSmallIntegerField, models.SmallIntegerField)
_KEYS = (models.AutoField, models.BigAutoField)


@functools.cache
def _shortcuts(model, vendor: str) -> tuple:
    """Per column of `_insert_sql`: (the exact type that takes the shortcut or None, the name
    of the connection.ops adapter to apply or None, the adapter's extra arguments)."""
    fields, _ = _insert_sql(model, vendor)
    plan = []
    for f in fields:
        target = f.target_field if type(f) is models.ForeignKey else f
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            plan.append((None, None, ()))
        elif type(target) in _KEYS:
            plan.append((int, None, ()))    # Django only checks an id (validate_autopk_value)
        elif type(target) in _TEXT:
            plan.append((str, None, ()))
        elif type(target) in _NUMBERS:
            plan.append((int, "adapt_integerfield_value", (target.get_internal_type(),)))
        elif type(f) is models.BooleanField:
            plan.append((bool, None, ()))
        elif type(f) is models.DateTimeField:
            plan.append((dt.datetime, "adapt_datetimefield_value", ()))
        else:
            plan.append((None, None, ()))
    return tuple(plan)


@functools.cache
def column_index(model, name: str) -> int:
    """Where field `name` sits in a row of `row_values` (to fill a foreign key in later)."""
    fields, _ = _insert_sql(model, connection.vendor)
    return [f.name for f in fields].index(name)


def insert_values(model, rows: list[list], *, returning_pk: bool = False) -> int | None:
    """INSERT rows made by `row_values`; with `returning_pk` (one row) the new primary key."""
    conn = connections[DEFAULT_DB_ALIAS]
    _, sql = _insert_sql(model, conn.vendor)
    if not returning_pk:
        _statement(sql, rows, many=True, conn=conn).close()
        return None
    (row,) = rows
    cursor = _statement(f"{sql} RETURNING {conn.ops.quote_name(model._meta.pk.column)}", row, conn=conn)
    try:
        return cursor.fetchone()[0]
    finally:
        cursor.close()


def insert_statement(model, rows: list[list]) -> tuple[str, list]:
    """One multi-row INSERT of rows made by `row_values`, as (sql, params), for a statement
    that carries it (`unflushed_statements`)."""
    _, sql = _insert_sql(model, connections[DEFAULT_DB_ALIAS].vendor)
    head, _, values = sql.rpartition(" VALUES ")
    return f"{head} VALUES {', '.join([values] * len(rows))}", [v for row in rows for v in row]


# A statement's parameters are counted in 16 bits (PostgreSQL's Bind message): a batch with
# more goes as a transaction of several statements, as before.
MAX_PARAMETERS = 30000


def _fit_one_statement(ops: list) -> bool:
    """Are these all inserts (`_run_as_one_statement` takes nothing else) of few enough values?"""
    count = 0
    for op in ops:
        if type(op) is _Insert:
            count += sum(map(len, op.rows))
        elif type(op) is _InsertLinked:
            count += len(op.row) + sum(map(len, op.linked_rows))
        else:
            return False
    return count <= MAX_PARAMETERS


def _linked_parts(op: _InsertLinked, name: str, conn) -> list[tuple[str, list]]:
    """`op` as two WITH queries: `name` inserts the row and returns its key, the next inserts the
    linked rows, each taking the key by a subquery of `name`."""
    pk = conn.ops.quote_name(op.model._meta.pk.column)
    row_sql, row_params = insert_statement(op.model, [op.row])
    fields, sql = _insert_sql(op.linked_model, conn.vendor)
    one = ", ".join(f"(SELECT {pk} FROM {name})" if i == op.link else "%s" for i in range(len(fields)))
    linked_sql = f"{sql.rpartition(' VALUES ')[0]} VALUES {', '.join([f'({one})'] * len(op.linked_rows))}"
    linked_params = [v for row in op.linked_rows for i, v in enumerate(row) if i != op.link]
    return [(f"{name} AS ({row_sql} RETURNING {pk})", row_params)] + (
        [(f"{name}_linked AS ({linked_sql})", linked_params)] if op.linked_rows else [])


def _run_as_one_statement(ops: list, conn) -> list[tuple[int, int]]:
    """PostgreSQL: `_Insert` and `_InsertLinked` ops as one statement of WITH queries, which
    outside a transaction commits (and flushes) on its own as it ends; (the op's position, the
    new key) of every `_InsertLinked`. The tables come in name order, as in a group commit's
    transaction, so that concurrent writers take their locks in one order."""
    parts, keys = [], []
    inserts: dict[type, list] = defaultdict(list)
    for op in ops:
        if isinstance(op, _Insert):
            inserts[op.model].extend(op.rows)
    for n, (model, rows) in enumerate(sorted(inserts.items(), key=lambda item: item[0]._meta.db_table)):
        if rows:
            sql, params = insert_statement(model, rows)
            parts.append((f"rows{n} AS ({sql})", params))
    for n, op in enumerate(ops):
        if isinstance(op, _InsertLinked):
            parts += _linked_parts(op, f"new{n}", conn)
            keys.append(f"SELECT {n}, {conn.ops.quote_name(op.model._meta.pk.column)} FROM new{n}")
    if not parts:
        return []
    sql = "WITH " + ", ".join(part for part, _ in parts) + " " + (" UNION ALL ".join(keys) or "SELECT 0, 0 WHERE false")
    cursor = _statement(sql, [v for _, params in parts for v in params], conn=conn)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def execute(sql: str, params: list) -> int:
    """One statement (server-side binding on PostgreSQL, see `_statement`); its row count."""
    cursor = _statement(sql, params)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _executemany(sql: str, params: list) -> None:
    _statement(sql, params, many=True).close()


def _statement(sql: str, params, *, many: bool = False, conn=None):
    """Run one statement in this thread's connection and transaction; return its open cursor.

    On PostgreSQL a plain psycopg cursor: Django's psycopg cursors bind client-side (every value
    quoted in Python), a plain cursor binds on the server, pipelines executemany and lets psycopg
    prepare repeated statements. On SQLite a plain sqlite3 cursor, the SQL's %s placeholders
    turned into ? once per statement text: Django's cursor wrapper, its execute wrappers and
    its per-call placeholder rewriting cost more than the INSERT itself, on paths that run once
    or twice per message in the SMTP service and in every delivery. On both, database errors
    come out as Django's (and mark the connection as Django's own cursor would). While Django records
    queries (DEBUG, a test capturing them) or someone wraps execution, its cursor runs them, so
    they are seen.

    `conn`: this thread's connection when the caller has it already. Each lookup of it (and
    each attribute read through `django.db.connection`) goes through asgiref's context-local
    storage, ~3 us alone on a slow box: a group commit made a dozen of them.
    """
    conn = conn or connections[DEFAULT_DB_ALIAS]
    if conn.vendor == "postgresql":
        import psycopg

        _ensure_connection(conn)
        cursor = psycopg.Cursor(conn.connection)
    elif conn.vendor == "sqlite" and not conn.queries_logged and not conn.execute_wrappers:
        _ensure_connection(conn)
        cursor, sql = conn.connection.cursor(), _qmark(sql)
    else:
        cursor = conn.cursor()
    try:
        with conn.wrap_database_errors:
            (cursor.executemany if many else cursor.execute)(sql, params)
    except BaseException:
        cursor.close()
        raise
    return cursor


def _ensure_connection(conn) -> None:
    """conn.ensure_connection() when there is none: Django's checks on every call (the async
    guard reads os.environ) cost more than a statement's own Python."""
    if conn.connection is None:
        conn.ensure_connection()


_FORMAT_PLACEHOLDER = re.compile(r"(?<!%)%s")


@functools.lru_cache(maxsize=1024)
def _qmark(sql: str) -> str:
    """Django's "format" placeholders as sqlite3's "qmark" ones, as Django's SQLite cursor does."""
    return _FORMAT_PLACEHOLDER.sub("?", sql).replace("%%", "%")


@contextmanager
def atomic_unflushed(*, pipelined: bool = False):
    """A transaction whose commit does not wait for the disk to confirm it.

    For writes that only record what already happened and whose loss in a power cut (never in
    a crash of our own processes: the database or the OS page cache has them) costs a repeat,
    never mail: a delivery's outcome. Lost, the row's lease runs out and the message goes out
    once more, as Postfix, which does not fsync delivery marks, does after a power cut. Each
    such commit on SQLite waited for its own fsync while holding the database's one writer
    lock, which every process shares. Nothing committed durably is put at risk: SQLite's WAL
    and PostgreSQL's WAL are replayed in order, so a later flushed commit (a queued message
    before its 250) carries the earlier unflushed ones to disk with it.

    SQLite sets `synchronous` per connection and not inside a transaction, so it is lowered
    before BEGIN and put back after; PostgreSQL takes it per transaction. Inside a caller's
    transaction nothing changes: that transaction's commit decides.

    `pipelined`: on PostgreSQL the block's statements go in psycopg's pipeline mode
    (`pipelined_statements`), for callers that read no row count inside it.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.in_atomic_block:
        with transaction.atomic():
            yield
        return
    if conn.vendor == "sqlite":
        with _sqlite_commits_unsynced(conn), transaction.atomic():
            yield
        return
    with transaction.atomic(), (pipelined_statements(conn) if pipelined else nullcontext()):
        if conn.vendor == "postgresql":
            with conn.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def unflushed_statements(statements: list[tuple[str, list]], *, also=None) -> None:
    """Data-modifying statements committed together without waiting for the disk (the writes
    `atomic_unflushed` is for), whose row counts nobody reads; `also`, if given, runs after them
    in the same transaction.

    On PostgreSQL, outside a caller's transaction and without `also`, they reach the server as
    one statement in a transaction of its own: each a WITH query of a SELECT that turns off
    synchronous_commit for that transaction alone (set_config's is_local), which commits as the
    statement ends. A delivery's outcome had been five statements (BEGIN, SET LOCAL, UPDATE,
    INSERT, COMMIT), each parsed, planned, executed and answered by the server, in two round
    trips: the worker's CPU a message fell by a quarter. A session-wide SET instead would
    outlive the statement, and behind PgBouncer in transaction mode land on another client's
    connection. Elsewhere `atomic_unflushed` runs them in turn, pipelined on PostgreSQL.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor == "postgresql" and also is None and not conn.in_atomic_block:
        steps = ", ".join(f"step{n} AS ({sql})" for n, (sql, _) in enumerate(statements))
        _statement(f"WITH {steps} SELECT set_config('synchronous_commit', 'off', true)",
                   [value for _, params in statements for value in params], conn=conn).close()
        return
    with atomic_unflushed(pipelined=True):
        for sql, params in statements:
            _statement(sql, params, conn=conn).close()
        if also is not None:
            also()


@contextmanager
def pipelined_statements(conn=None):
    """On PostgreSQL, psycopg's pipeline mode for the statements of the block; elsewhere nothing.

    Outside it every statement is a round trip to the server, and so are the BEGIN that psycopg
    sends before a transaction's first statement and the COMMIT: a delivery's outcome (BEGIN,
    SET LOCAL, UPDATE, INSERT, COMMIT) took five, and the server and both processes woke up for
    each. In the pipeline the statements are sent without waiting and their answers read at the
    next sync: a fetch of a result, or the end of the block. Use it inside `transaction.atomic()`
    (Django then has begun the transaction, which would otherwise cost a sync of its own), and
    only around statements whose row count nobody reads: psycopg knows it only after the sync
    (-1 before). An error surfaces at that sync as Django's (marking the connection for a check
    before its next use, as Django's cursor would), and the transaction rolls back as usual.
    """
    conn = conn or connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        yield
        return
    _ensure_connection(conn)
    with conn.wrap_database_errors, conn.connection.pipeline():
        yield


def atomic_unless_in_one():
    """transaction.atomic() where the caller is outside any transaction; inside one (the SMTP
    service's group commit) nothing, as its statements already commit or fail together there:
    a nested block without a savepoint costs as much Python as the INSERTs it wraps."""
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return nullcontext()
    return transaction.atomic()


@contextmanager
def atomic_flushed_outside_lock():
    """A transaction that is on disk when this returns, its flush waited for after the lock.

    On SQLite, synchronous=FULL syncs the write-ahead log inside COMMIT, while the one writer
    lock that every process shares is held: under load that fsync was 1.8 ms (p50) of a 2.5 ms
    commit, and every other process's writer waited it out. Here the transaction commits
    without the sync and the log file is then synced after the lock is released, before this
    returns (so before anyone is told the write is done). A WAL commit is durable once its
    frames are on disk; a checkpoint that recycles the log in between syncs those frames, and
    the database file it copied them into, first. Writers of other processes meanwhile commit,
    and their syncs of the same file share the disk's flush with ours. PostgreSQL commits as
    usual (its server already groups the flushes of concurrent commits). Inside a caller's
    transaction nothing changes: that transaction's commit decides.
    """
    with atomic_sync_deferred() as wal:
        yield
    wal.sync()


class UnsyncedLog:
    """What still makes a committed transaction durable: on SQLite a copy of the descriptor
    of the log file it went to (`fd`), which `sync` (or whoever takes `fd`) syncs and closes;
    None when the commit was already durable (PostgreSQL, or a caller's transaction decides)."""

    fd: int | None = None
    committed = False

    def sync(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


@contextmanager
def atomic_sync_deferred(wal: UnsyncedLog | None = None):
    """`atomic_flushed_outside_lock` with the sync left to the caller, who may do it in
    another thread (the SMTP service's writer hands it to its syncer and goes on). An error
    raised once `wal.committed` is set came after the commit: retrying the writes would make
    them twice."""
    wal = wal or UnsyncedLog()
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.in_atomic_block or conn.vendor != "sqlite":
        with transaction.atomic():
            yield wal
        wal.committed = True
        return
    with _sqlite_commits_unsynced(conn), transaction.atomic():
        yield wal
    wal.committed = True
    wal.fd = conn.wal_descriptor_copy()


_NORMAL = 1     # what `PRAGMA synchronous` reads for NORMAL


def keep_commits_unsynced() -> None:
    """For a thread whose every commit is synced by hand after it (the SMTP service's writer):
    its connection stays at synchronous=NORMAL between transactions instead of being lowered
    and put back around each one, two statements a group commit."""
    connections[DEFAULT_DB_ALIAS]._mailhost_rests_unsynced = True


@contextmanager
def _sqlite_commits_unsynced(conn):
    """synchronous=NORMAL for the transaction inside (WAL mode: no sync at COMMIT), then the
    connection's own level again. SQLite sets it per connection and not inside a transaction.

    The connection is looked up once for the whole transaction: through `django.db.connection`
    every attribute read is a lookup in asgiref's context-local storage, and with them this
    wrapper cost more than the transaction it wraps."""
    _ensure_connection(conn)
    raw = conn.connection
    # (which sqlite3 connection, its own level, its level now): read once per connection. The
    # connection itself, not its id(): a reopened one may get the closed one's address.
    known = conn.__dict__.get("_mailhost_sync_level")
    if known is None or known[0] is not raw:
        cursor = _statement("PRAGMA synchronous", [], conn=conn)
        level = cursor.fetchone()[0]
        cursor.close()
        known = (raw, level, level)
    if known[2] != _NORMAL:
        _statement("PRAGMA synchronous=NORMAL", [], conn=conn).close()
    conn._mailhost_sync_level = (raw, known[1], _NORMAL)
    try:
        yield
    finally:
        if not conn.__dict__.get("_mailhost_rests_unsynced") and known[1] != _NORMAL:
            try:
                _statement(f"PRAGMA synchronous={int(known[1])}", [], conn=conn).close()
                conn._mailhost_sync_level = (raw, known[1], known[1])
            except Exception:
                # Never leave a connection that skips the flush behind: a fresh one starts synced.
                conn.close()
                raise


_last_check = threading.local()


def refresh_connection() -> None:
    """Django's per-request connection upkeep for a long-lived service thread, once a second.

    close_old_connections() drops a connection that broke or outlived CONN_MAX_AGE, and with
    CONN_HEALTH_CHECKS it also makes the next query ask `SELECT 1` first. Called before every
    SMTP command's database work and every group commit, that was 1.3 extra round trips per
    message on PostgreSQL. Now it runs at once after a database error (so a restarted database
    still costs one failed transaction, not every one) and otherwise once a second per thread.
    """
    now = time.monotonic()
    if connection.connection is None or connection.errors_occurred or now - getattr(_last_check, "at", 0.0) >= 1:
        close_old_connections()
        _last_check.at = now


def run(fn, *args, **kwargs):
    """fn(*args, **kwargs) committed before this returns; its result, or its exception.

    In the SMTP service on PostgreSQL, fn runs in its group commit's pipeline
    (`pipelined_statements`): a row count reads -1 there, so fn fetches what it needs to know."""
    return _submit(_Call(fn, args, kwargs), wait=True)


def add_used_bytes(mailbox_id: int, delta: int) -> None:
    """Count `delta` bytes into a mailbox's quota counter."""
    _submit(_AddUsedBytes(mailbox_id, delta))


def insert(objs: list) -> None:
    """INSERT these unsaved model instances (all of one model)."""
    if objs:
        # One prepared INSERT for every row: bulk_create compiles (and on PostgreSQL quotes)
        # each value in Python, which was a sixth of the service's CPU.
        _submit(_Insert(type(objs[0]), row_values(objs)))


def insert_new(model, records: list[dict]) -> None:
    """INSERT new rows given as {attname: value} (see `new_row_values`)."""
    if records:
        _submit(_Insert(model, new_row_values(model, records)))


def _submit(op, wait: bool = False):
    writer = _writer
    if writer is None:
        # Threads of one process still take turns in Python rather than in SQLite's busy handler.
        with _sqlite_writer if connection.vendor == "sqlite" else nullcontext():
            return op()
    future: Future = Future()
    if not wait:
        future.add_done_callback(_log_failure)
    writer.queue.put((op, future, wait))
    return future.result() if wait else None


def _log_failure(future: Future) -> None:
    if future.exception() is not None:
        log.error("bookkeeping write failed", exc_info=future.exception())


class Writer(threading.Thread):
    """Commits everything waiting in one transaction, then hands the sync of SQLite's log to
    its Syncer and gathers the next batch at once. Synced in this thread, every batch queued
    behind the disk: under load that wait was a third of the time from a message's last byte
    to its 250. A batch that nobody waits for (bookkeeping alone) is not synced by itself: the
    next synced commit carries it to disk, as SQLite's log is written in order."""

    def __init__(self):
        super().__init__(name="smtp-db-writer", daemon=True)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.syncer = Syncer()

    def run(self) -> None:
        name_native_thread()
        keep_commits_unsynced()     # every commit here goes to the syncer (or is carried by the next)
        self.syncer.start()
        try:
            while True:
                batch = self._gather()
                stop = batch[-1] is None
                items = [item for item in batch if item is not None]
                if items:
                    self._commit(items)
                if stop:
                    return
        finally:
            self.syncer.stop()
            close_old_connections()
            connection.close()

    def _gather(self) -> list:
        """Everything waiting; when none of it is waited on, also what comes within
        BOOKKEEPING_DELAY, up to the first write that is (or the stop marker)."""
        batch = [self.queue.get()]
        deadline = None
        while batch[-1] is not None and len(batch) < MAX_BATCH:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except queue.Empty:
                pass
            if any(item is None or item[2] for item in batch):
                break
            deadline = deadline or time.monotonic() + BOOKKEEPING_DELAY
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self.queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _commit(self, items: list) -> None:
        refresh_connection()
        if connection.vendor == "postgresql" and _fit_one_statement([op for op, _, _ in items]):
            self._commit_as_one_statement(items)
            return
        deltas: dict[int, int] = defaultdict(int)
        inserts: dict[type, list] = defaultdict(list)
        results = {}
        wal = UnsyncedLog()
        try:
            # Pipelined on PostgreSQL (see `pipelined_statements`): the ops here read no row
            # count, and a message's key (its one statement's answer) is the only one waited for.
            with atomic_sync_deferred(wal), pipelined_statements():
                for op, future, _ in items:
                    if isinstance(op, _AddUsedBytes):
                        deltas[op.mailbox_id] += op.delta
                    elif isinstance(op, _Insert):
                        inserts[op.model].extend(op.rows)
                    else:
                        results[id(future)] = op()
                # Tables in name order: every group commit takes its locks in one order. (A test's
                # teardown TRUNCATE takes them in Django's set order, random per process, and
                # can still deadlock with a late batch on PostgreSQL: tests/conftest.py retries it.)
                for model, rows in sorted(inserts.items(), key=lambda item: item[0]._meta.db_table):
                    insert_values(model, rows)
                if deltas:
                    _add_used_bytes(deltas)
        except Exception as exc:
            if wal.committed:
                log.error("batched writes committed but cannot be synced", exc_info=True)
                _resolve([(future, None) for _, future, _ in items], exc)
                return
            self._one_by_one(items)
            return
        done = [(future, results.get(id(future))) for _, future, _ in items]
        if wal.fd is not None and any(wait for _, _, wait in items):
            self.syncer.queue.put((wal.fd, done))
            return
        if wal.fd is not None:
            os.close(wal.fd)
        _resolve(done)

    def _commit_as_one_statement(self, items: list) -> None:
        """PostgreSQL, a batch of inserts alone (the usual one: queued messages and their log
        rows): one statement committed as it ends (`_run_as_one_statement`). In a transaction
        it was BEGIN, a message's INSERT ... RETURNING, its recipients' INSERT, the log rows'
        and COMMIT, in three round trips through psycopg's pipeline."""
        ops = [op for op, _, _ in items]
        try:
            keys = dict(_run_as_one_statement(ops, connection))
        except Exception:
            self._one_by_one(items)
            return
        _resolve([(future, keys.get(n)) for n, (_, future, _) in enumerate(items)])

    @staticmethod
    def _one_by_one(items: list) -> None:
        """One failing write must not fail its neighbours: each again in its own transaction."""
        log.warning("batched write failed; retrying %d writes one by one", len(items), exc_info=True)
        refresh_connection()  # a broken connection is dropped here, not reused for every retry
        for op, future, _ in items:
            try:
                with atomic_flushed_outside_lock():
                    result = op()
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


class Syncer(threading.Thread):
    """Syncs SQLite's log for group commits already made, then tells their waiters.

    One sync covers every commit queued when it begins (they all precede it in the one log
    file), so while the disk confirms one, the writer commits the next batches and the
    following sync confirms them all together. No waiter is told before a sync that began
    after its commit has returned. A failed sync fails its waiters (the SMTP session answers
    451 and the client tries again; the rows may still survive, which at worst sends once
    more), and is never retried as new writes.
    """

    def __init__(self):
        super().__init__(name="smtp-db-syncer", daemon=True)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()

    def run(self) -> None:
        name_native_thread()
        while True:
            pending = [self.queue.get()]
            while True:
                try:
                    pending.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            commits = [item for item in pending if item is not None]
            if commits:
                _sync(commits)
            if len(commits) < len(pending):
                return

    def stop(self) -> None:
        if self.is_alive():
            self.queue.put(None)
            self.join()


def _sync(commits: list) -> None:
    error = None
    try:
        files = {}
        for fd, _ in commits:
            stat = os.fstat(fd)
            files.setdefault((stat.st_dev, stat.st_ino), fd)
        for fd in files.values():
            os.fdatasync(fd)
    except OSError as exc:
        log.error("syncing the database log failed", exc_info=True)
        error = exc
    for fd, done in commits:
        os.close(fd)
        _resolve(done, error)


def _resolve(done: list, error: BaseException | None = None) -> None:
    for future, result in done:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def start() -> None:
    """Called by the SMTP service once its event loop runs; `stop` flushes and ends it."""
    global _writer
    _writer = Writer()
    _writer.start()


def stop() -> None:
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.queue.put(None)
        writer.join()
