"""Durable before 250, stored byte for byte, and a clean stop on SIGTERM."""

from __future__ import annotations

import smtplib
import time
from contextlib import contextmanager

import pytest
from django.test.utils import CaptureQueriesContext

from delivery.models import MessageLog, QueuedRecipient
from mailboxes.models import Mailbox
from mailboxes.provisioning import create_alias
from tests.smtp_fixtures import RawSession


def test_a_message_acknowledged_with_250_survives_kill_9_of_the_service(smtp_service, bob):
    create_alias("team@example.org", ["bob@example.org", "friend@remote.test"])
    data = b"From: someone@elsewhere.test\r\nSubject: durable\r\n\r\nkeep me\r\n"
    session = RawSession(smtp_service.inbound)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<someone@elsewhere.test>")
    session.command("RCPT TO:<team@example.org>")
    session.command("DATA")
    session.send(data + b".\r\n")
    assert session.reply().startswith("250 ")
    smtp_service.kill9()
    [stored] = (bob.maildir / "new").iterdir()
    assert stored.read_bytes().endswith(data)
    assert not any((bob.maildir / "tmp").iterdir())
    assert QueuedRecipient.objects.get().address == "friend@remote.test"


def test_a_commit_reaches_the_disk_before_it_returns(db):
    """A queue row committed before 250 must survive a power cut, not just a crash: on SQLite in
    WAL mode that takes synchronous=FULL (NORMAL syncs the log only at checkpoints); on
    PostgreSQL synchronous_commit must not be off."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] in ("on", "remote_write", "remote_apply", "local")
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 2  # FULL


def flushing(connection) -> bool:
    """Does a commit on this connection wait for the disk?"""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0] != "off"
        cursor.execute("PRAGMA synchronous")
        return cursor.fetchone()[0] == 2


def test_a_delivery_outcome_commits_without_waiting_for_the_disk(transactional_db, bob):
    """A delivered outcome lost in a power cut costs a repeated delivery, never mail, so its
    commit skips the flush; the connection flushes again for everything after it."""
    from django.db import connection

    from delivery import db_writes, queue

    queue.enqueue("bob@example.org", ["friend@remote.test"], b"From: bob@example.org\r\n\r\nhi\r\n")
    [run] = queue.claim_due(run="run-1")
    rows = queue.rows_of(run)

    with db_writes.atomic_unflushed():
        assert not flushing(connection)
    assert flushing(connection)

    with commits_watched(connection) as commits:
        queue.record_delivered(run, rows, queue.Outcome("delivered", "250 2.0.0 ok", "TLSv1.3"))
    assert commits == ["unflushed"]
    assert QueuedRecipient.objects.get().state == QueuedRecipient.State.DELIVERED
    assert flushing(connection)


@contextmanager
def commits_watched(connection):
    """How each transaction that writes a message-log row commits: "flushed" or "unflushed".

    On PostgreSQL a deferred trigger reads synchronous_commit as the transaction commits (the
    outcome's own statement sets it for its transaction alone); on SQLite, where `synchronous`
    belongs to the connection, the PRAGMAs around the commit say it."""
    seen = []
    if connection.vendor == "sqlite":
        def watch(execute, sql, params, many, context):
            if sql == "PRAGMA synchronous=NORMAL":
                seen.append("unflushed")
            return execute(sql, params, many, context)

        with connection.execute_wrapper(watch):
            yield seen
        return
    table = connection.ops.quote_name(MessageLog._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE commit_seen (id serial, setting text)")
        cursor.execute("CREATE FUNCTION commit_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       "INSERT INTO commit_seen (setting) VALUES (current_setting('synchronous_commit')); "
                       "RETURN NULL; END $$")
        cursor.execute(f"CREATE CONSTRAINT TRIGGER commit_seen AFTER INSERT ON {table} "
                       "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_seen()")
    try:
        yield seen
        with connection.cursor() as cursor:
            cursor.execute("SELECT setting FROM commit_seen ORDER BY id")
            seen += ["unflushed" if setting == "off" else "flushed" for (setting,) in cursor.fetchall()]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER commit_seen ON {table}")
            cursor.execute("DROP FUNCTION commit_seen")
            cursor.execute("DROP TABLE commit_seen")


def test_inside_a_callers_transaction_the_callers_commit_decides(transactional_db):
    from django.db import connection, transaction

    from delivery import db_writes

    with transaction.atomic():
        with db_writes.atomic_unflushed():
            assert flushing(connection)
    assert flushing(connection)


def pipeline_status(connection):
    from psycopg import pq

    return pq.PipelineStatus(connection.connection.pgconn.pipeline_status)


def test_on_postgresql_a_delivery_outcome_is_one_statement(transactional_db, bob, monkeypatch):
    """The UPDATE, the log INSERT and the setting that skips the flush reach the server as one
    statement in a transaction of its own: not BEGIN, SET LOCAL, UPDATE, INSERT and COMMIT, each
    parsed, planned and answered, and a round trip each where the database is on another host."""
    from django.db import connection

    from delivery import db_writes, queue

    if connection.vendor != "postgresql":
        pytest.skip("one statement with data-modifying WITH queries is PostgreSQL's")
    queue.enqueue("bob@example.org", ["friend@remote.test", "other@remote.test"],
                  b"From: bob@example.org\r\n\r\nhi\r\n")
    [run] = queue.claim_due(run="run-1")
    rows = queue.rows_of(run)
    sent = []

    def statement(sql, params, **kwargs):
        sent.append(sql)
        return real_statement(sql, params, **kwargs)

    real_statement = db_writes._statement
    monkeypatch.setattr(db_writes, "_statement", statement)
    with CaptureQueriesContext(connection) as through_django:
        queue.record_delivered(run, rows, queue.Outcome("delivered", "250 2.0.0 ok", "TLSv1.3"))
    assert len(sent) == 1      # and, through Django, no more than the read of the domain's webhooks:
    assert [q["sql"].split()[0] for q in through_django.captured_queries] in ([], ["SELECT"])
    assert sent[0].startswith("WITH ") and "set_config('synchronous_commit', 'off', true)" in sent[0]
    assert set(QueuedRecipient.objects.values_list("state", flat=True)) == {QueuedRecipient.State.DELIVERED}
    assert sorted(MessageLog.objects.filter(direction=MessageLog.Direction.OUTBOUND)
                  .values_list("recipients", flat=True)) == ["friend@remote.test", "other@remote.test"]
    assert flushing(connection)


def test_on_postgresql_a_group_commit_is_pipelined(transactional_db):
    from django.db import connection
    from psycopg import pq

    from delivery import db_writes

    if connection.vendor != "postgresql":
        pytest.skip("psycopg's pipeline mode is PostgreSQL's")
    db_writes.start()
    try:
        inside = db_writes.run(lambda: pipeline_status(connection))
    finally:
        db_writes.stop()
    assert inside == pq.PipelineStatus.ON


def test_on_postgresql_a_queued_message_is_compressed_with_lz4_and_read_back_byte_for_byte(transactional_db, bob):
    """pglz cost several times lz4's CPU for every message over ~2 KB, once to store it and
    again at every delivery attempt that reads it back."""
    from django.db import connection

    from delivery import queue
    from delivery.models import QueuedMessage

    if connection.vendor != "postgresql":
        pytest.skip("TOAST compression is PostgreSQL's")
    body = b"".join(b"line %d of a long report, much like the one before it\r\n" % n for n in range(400))
    message = queue.enqueue("bob@example.org", ["friend@remote.test"], b"From: bob@example.org\r\n\r\n" + body)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_column_compression(data), octet_length(data), pg_column_size(data) "
                       "FROM delivery_queuedmessage WHERE id = %s", [message.pk])
        method, length, stored = cursor.fetchone()
    assert (method, length) == ("lz4", message.size) and stored < length / 3
    assert bytes(QueuedMessage.objects.get(pk=message.pk).data).endswith(body)


def test_a_statement_failing_in_an_outcome_undoes_the_whole_transaction(transactional_db, bob):
    """On PostgreSQL the error only comes back at the sync of the pipeline, or at the end of the
    one statement that carries them all, after the statements before it ran: they are rolled
    back with it, and the connection is fit for the next transaction."""
    from django.db import IntegrityError, connection

    from delivery import db_writes, queue
    from delivery.models import QueuedMessage

    message = queue.enqueue("bob@example.org", ["friend@remote.test"], b"From: bob@example.org\r\n\r\nhi\r\n")
    table = connection.ops.quote_name(QueuedRecipient._meta.db_table)
    twin = QueuedMessage(queue_id=message.queue_id, sender="bob@example.org", data=b"x", size=1)
    with pytest.raises(IntegrityError):
        with db_writes.atomic_unflushed(pipelined=True):
            db_writes.execute(f"UPDATE {table} SET attempts = %s", [7])
            db_writes.insert_values(QueuedMessage, db_writes.row_values([twin]))    # the queue id is taken
    assert QueuedRecipient.objects.get().attempts == 0
    with pytest.raises(IntegrityError):
        db_writes.unflushed_statements([(f"UPDATE {table} SET attempts = %s", [7]),
                                        db_writes.insert_statement(QueuedMessage, db_writes.row_values([twin]))])
    assert QueuedRecipient.objects.get().attempts == 0
    with db_writes.atomic_unflushed(pipelined=True):
        db_writes.execute(f"UPDATE {table} SET attempts = %s", [1])
    assert QueuedRecipient.objects.get().attempts == 1


def test_an_8bit_body_with_utf8_headers_is_stored_byte_for_byte(shared_smtp_service, bob):
    data = ("From: Jürgen Groß <jg@elsewhere.test>\r\nSubject: Grüße aus Köln\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Schöne Grüße, 😀\r\n").encode() + b"raw latin-1 \xe9\xe8 and \xff\xfe bytes\r\n..leading dot\r\n"
    with smtplib.SMTP("127.0.0.1", shared_smtp_service.inbound, timeout=20) as client:
        client.sendmail("jg@elsewhere.test", ["bob@example.org"], data, mail_options=["BODY=8BITMIME"])
    [stored] = (bob.maildir / "new").iterdir()
    raw = stored.read_bytes()
    assert raw.endswith(data)
    prepended = raw[: -len(data)]
    assert prepended.startswith(b"Received: ") and b"\r\nAuthentication-Results: mail.mailhost.test;" in prepended


def test_sigterm_stops_the_service_cleanly(smtp_service, bob):
    idle = RawSession(smtp_service.inbound)
    assert smtp_service.stop(timeout=15) == 0
    assert idle.closed_by_server()
    assert "stopped" in smtp_service.log()


def test_the_log_rows_and_quota_counts_written_behind_the_reply_are_flushed_by_sigterm(smtp_service, bob):
    data = b"From: someone@elsewhere.test\r\nSubject: counted\r\n\r\ncount me\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_service.inbound, timeout=20) as client:
        for _ in range(20):
            client.sendmail("someone@elsewhere.test", ["bob@example.org"], data)
    assert smtp_service.stop(timeout=15) == 0
    stored = list((bob.maildir / "new").iterdir())
    assert len(stored) == 20
    assert MessageLog.objects.filter(domain=bob.domain, result="accepted").count() == 20
    assert Mailbox.objects.get(pk=bob.pk).used_bytes == sum(path.stat().st_size for path in stored)


def test_dot_stuffing_and_a_terminator_split_over_packets_are_read_exactly(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.inbound)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<someone@elsewhere.test>")
    session.command("RCPT TO:<bob@example.org>")
    assert session.command("DATA").startswith("354")
    for piece in (b"..first line was dot-stuffed\r\n", b"..\r\n", b"middle\r", b"\n.", b"x\r\n\r", b"\n", b".", b"\r",
                  b"\n"):
        session.send(piece)
        time.sleep(0.05)
    assert session.reply().startswith("250 ")
    session.close()
    [stored] = (bob.maildir / "new").iterdir()
    assert stored.read_bytes().endswith(b"\r\n.first line was dot-stuffed\r\n.\r\nmiddle\r\nx\r\n\r\n")


def test_an_empty_message_and_a_one_blank_line_message_are_taken_as_sent(shared_smtp_service, bob):
    session = RawSession(shared_smtp_service.inbound)
    session.command("EHLO client.test")
    for body in (b"", b"\r\n"):
        session.command("MAIL FROM:<someone@elsewhere.test>")
        session.command("RCPT TO:<bob@example.org>")
        assert session.command("DATA").startswith("354")
        session.send(body + b".\r\n")
        assert session.reply().startswith("250 ")
    session.close()
    sizes = sorted(len(path.read_bytes().split(b"\r\n\r\n", 1)[-1]) for path in (bob.maildir / "new").iterdir())
    assert len(sizes) == 2


def test_a_group_commit_is_on_disk_before_it_is_reported_done_and_syncs_outside_the_lock(
        transactional_db, monkeypatch):
    """The SMTP service's group commit (queue rows before their 250) does not sync inside
    COMMIT, where SQLite's one writer lock is held; the log file is synced after the lock is
    released, before any session hears that its write is done. PostgreSQL commits as usual."""
    import os

    from django.db import connection

    from delivery import db_writes
    from delivery.models import MessageLog

    synced = []
    real_fdatasync = os.fdatasync

    def spy(fd):
        # Which file, and whether any writer (of any process) held SQLite's writer turn then.
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), writer_turn_is_taken(connection)))
        return real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)

    def write():
        synced.append(("flushing inside the transaction", flushing(connection)))
        MessageLog.objects.create(direction="submission", result="accepted", queue_id="GROUP1")

    db_writes.start()
    try:
        db_writes.run(write)
        if connection.vendor == "sqlite":
            wal = str(connection.settings_dict["NAME"]) + "-wal"
            assert synced == [("flushing inside the transaction", False),
                              (os.path.realpath(wal), False)]    # before run() returned
        else:
            assert synced == [("flushing inside the transaction", True)]
    finally:
        db_writes.stop()
    assert MessageLog.objects.filter(queue_id="GROUP1").exists()
    assert flushing(connection)


def test_the_writer_commits_the_next_batch_while_the_disk_confirms_the_last(transactional_db, monkeypatch):
    """Pipelined group commit: a waiter is told only after a sync that began after its commit,
    but the writer does not wait for that sync before it commits what came in meanwhile."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from delivery import db_writes
    from delivery.models import MessageLog

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL flushes inside its own COMMIT")
    first_sync_began, disk_confirms = threading.Event(), threading.Event()
    syncs = []
    real_fdatasync = os.fdatasync

    def slow_disk(fd):
        syncs.append(fd)
        first_sync_began.set()
        assert disk_confirms.wait(10)
        return real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_disk)

    def log_row(queue_id):
        return lambda: MessageLog.objects.create(direction="submission", result="accepted", queue_id=queue_id)

    db_writes.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(db_writes.run, log_row("PIPE1"))
            assert first_sync_began.wait(10)
            second = pool.submit(db_writes.run, log_row("PIPE2"))
            # Both rows are committed (another connection sees them) while the disk has not yet
            # confirmed the first sync, and neither writer is told it is done.
            assert wait_until(lambda: committed_queue_ids("PIPE") == {"PIPE1", "PIPE2"})
            assert not first.done() and not second.done()
            disk_confirms.set()
            first.result(10), second.result(10)
    finally:
        disk_confirms.set()
        db_writes.stop()
    assert len(syncs) == 2      # the second commit waited for a sync of its own


def test_the_writers_connection_stays_unsynced_between_its_group_commits(transactional_db):
    """Every group commit of the SMTP service's writer is synced by its syncer (or carried to
    disk by the next one), so its connection is not put back to FULL after each and lowered
    again before the next: two statements a commit fewer. Anyone else's connection is."""
    from django.db import connection

    from delivery import db_writes
    from delivery.models import MessageLog

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no per-connection synchronous level for the writer to keep")
    ran = []

    def trace_the_writer():
        connection.connection.set_trace_callback(ran.append)

    def untrace_the_writer():
        connection.connection.set_trace_callback(None)
        return flushing(connection)

    db_writes.start()
    try:
        db_writes.run(trace_the_writer)
        for n in range(3):
            db_writes.run(lambda n=n: MessageLog.objects.create(direction="submission", result="accepted",
                                                                 queue_id=f"REST{n}"))
        writer_flushing = db_writes.run(untrace_the_writer)
    finally:
        db_writes.stop()
    assert [sql for sql in ran if sql.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 4
    assert not [sql for sql in ran if sql.startswith("PRAGMA synchronous=")]
    assert not writer_flushing
    assert committed_queue_ids("REST") == {"REST0", "REST1", "REST2"}
    assert flushing(connection)     # this thread's connection: every commit waits for the disk


def test_a_connection_that_rests_unsynced_is_lowered_again_once_reopened(transactional_db):
    """The writer's connection is reopened when it breaks or grows old; the new one starts at
    the configured FULL and must be lowered before its first group commit like the first."""
    import threading

    from django.db import connection

    from delivery import db_writes

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no per-connection synchronous level to lower again")
    seen = []

    def writer_like():
        db_writes.keep_commits_unsynced()
        try:
            for _ in range(3):
                wal = db_writes.UnsyncedLog()
                with db_writes.atomic_sync_deferred(wal):
                    pass
                wal.sync()
                seen.append(flushing(connection))
                connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=writer_like)
    thread.start()
    thread.join(30)
    assert seen == [False, False, False]


def test_bookkeeping_that_nobody_waits_for_is_not_synced_by_itself(transactional_db, monkeypatch):
    import os

    from django.db import connection

    from delivery import db_writes
    from delivery.models import MessageLog

    synced = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real_fdatasync(fd))
    db_writes.start()
    try:
        db_writes.insert([MessageLog(direction="inbound", result="accepted", queue_id="BOOK1")])
    finally:
        db_writes.stop()
    assert committed_queue_ids("BOOK") == {"BOOK1"}
    assert synced == []
    if connection.vendor == "sqlite":
        db_writes.start()
        try:
            db_writes.run(lambda: None)     # a waited-for write is synced
        finally:
            db_writes.stop()
        assert len(synced) == 1


def test_a_sync_that_fails_after_the_commit_fails_its_writers_without_writing_twice(transactional_db, monkeypatch):
    """The disk refusing the sync: the session hears an error (and answers 451), the writes
    already committed are not made a second time by a retry, and the writer carries on."""
    import errno
    import os

    from django.db import connection

    from delivery import db_writes
    from delivery.models import MessageLog

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL flushes inside its own COMMIT")
    real_fdatasync = os.fdatasync
    failing = [True]

    def disk(fd):
        if failing[0]:
            raise OSError(errno.EIO, "I/O error")
        return real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", disk)
    db_writes.start()
    try:
        with pytest.raises(OSError):
            db_writes.run(lambda: MessageLog.objects.create(direction="submission", result="accepted",
                                                            queue_id="EIO1"))
        failing[0] = False
        db_writes.run(lambda: MessageLog.objects.create(direction="submission", result="accepted",
                                                        queue_id="EIO2"))
    finally:
        db_writes.stop()
    assert sorted(MessageLog.objects.filter(queue_id__startswith="EIO").values_list("queue_id", flat=True)) == [
        "EIO1", "EIO2"]


def writer_turn_is_taken(connection) -> bool:
    """Does anyone hold the SQLite writer turn (mailhost.sqlite3's lock file) right now?"""
    import fcntl
    import os

    if connection.vendor != "sqlite":
        return False
    fd = os.open(f"{connection.settings_dict['NAME']}-writers", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def committed_queue_ids(prefix: str) -> set[str]:
    """Queue ids of log rows that a separate connection (another thread's) sees committed."""
    import threading

    from django.db import connection

    from delivery.models import MessageLog

    seen = set()

    def look():
        seen.update(MessageLog.objects.filter(queue_id__startswith=prefix).values_list("queue_id", flat=True))
        connection.close()

    reader = threading.Thread(target=look)
    reader.start()
    reader.join()
    return seen


def wait_until(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_group_commit_leaves_the_connection_flushing_after_it_whether_it_failed_or_not(transactional_db):
    from django.db import connection, transaction

    from delivery import db_writes
    from delivery.models import MessageLog

    with db_writes.atomic_flushed_outside_lock():
        MessageLog.objects.create(direction="submission", result="accepted", queue_id="GROUP2")
    assert flushing(connection)
    try:
        with db_writes.atomic_flushed_outside_lock():
            raise RuntimeError("the write failed")
    except RuntimeError:
        pass
    assert flushing(connection)
    with transaction.atomic():
        with db_writes.atomic_flushed_outside_lock():
            assert flushing(connection)     # inside a caller's transaction its commit decides


def test_on_sqlites_plain_path_the_outcome_commit_runs_unsynced_between_its_own_pragmas(transactional_db, bob):
    """What SQLite itself ran (its trace, not Django's query log, which the shortcut skips)."""
    from django.db import connection

    from delivery import queue, webhooks

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's own statement trace")
    queue.enqueue("bob@example.org", ["friend@remote.test"], b"From: bob@example.org\r\n\r\nhi\r\n")
    [run] = queue.claim_due(run="run-1")
    rows = queue.rows_of(run)
    webhooks._hooks_for(bob.domain_id)     # read every few seconds, before the transaction, not here
    ran = []
    connection.ensure_connection()
    connection.connection.set_trace_callback(ran.append)
    try:
        queue.record_delivered(run, rows, queue.Outcome("delivered", "250 2.0.0 ok", "TLSv1.3"))
    finally:
        connection.connection.set_trace_callback(None)
    shape = [sql.split(" ", 2)[0] + (" " + sql.split(" ", 2)[1] if sql.startswith(("PRAGMA", "BEGIN")) else "")
             for sql in ran]
    assert shape == ["PRAGMA synchronous=NORMAL", "BEGIN IMMEDIATE", "UPDATE", "INSERT", "COMMIT",
                     "PRAGMA synchronous=2"]
    assert QueuedRecipient.objects.get().state == QueuedRecipient.State.DELIVERED
    assert flushing(connection)
