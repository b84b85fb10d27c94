"""Durable before 250, stored byte for byte, and a clean stop on SIGTERM."""

from __future__ import annotations

import smtplib
import time

import pytest

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
    seen = []

    def watch(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with db_writes.atomic_unflushed():
        assert not flushing(connection)
    assert flushing(connection)

    with connection.execute_wrapper(watch):
        queue.record_delivered(run, rows, queue.Outcome("delivered", "250 2.0.0 ok", "TLSv1.3"))
    relaxing = {"sqlite": "PRAGMA synchronous=NORMAL", "postgresql": "SET LOCAL synchronous_commit TO OFF"}
    assert relaxing[connection.vendor] in seen
    assert QueuedRecipient.objects.get().state == QueuedRecipient.State.DELIVERED
    assert flushing(connection)


def test_inside_a_callers_transaction_the_callers_commit_decides(transactional_db):
    from django.db import connection, transaction

    from delivery import db_writes

    with transaction.atomic():
        with db_writes.atomic_unflushed():
            assert flushing(connection)
    assert flushing(connection)


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
    COMMIT, where SQLite's one writer lock is held; the writer fsyncs the log file itself after
    releasing it, before any session hears that its write is done. PostgreSQL commits as usual."""
    import os

    from django.db import connection

    from delivery import db_writes
    from delivery.models import MessageLog

    synced = []
    if connection.vendor == "sqlite":
        from mailhost.sqlite3 import base

        real_fsync = base.os.fsync

        def spy(fd):
            # Which file, and whether the writer still held the lock or the transaction then.
            synced.append((os.readlink(f"/proc/self/fd/{fd}"), connection._has_turn, connection.in_atomic_block))
            return real_fsync(fd)

        monkeypatch.setattr(base.os, "fsync", spy)

    def write():
        synced.append(("flushing inside the transaction", flushing(connection)))
        MessageLog.objects.create(direction="submission", result="accepted", queue_id="GROUP1")

    db_writes.start()
    try:
        db_writes.run(write)
        if connection.vendor == "sqlite":
            wal = str(connection.settings_dict["NAME"]) + "-wal"
            assert synced[0] == ("flushing inside the transaction", False)
            assert synced[1:] == [(os.path.realpath(wal), False, False)]    # before run() returned
        else:
            assert synced == [("flushing inside the transaction", True)]
    finally:
        db_writes.stop()
    assert MessageLog.objects.filter(queue_id="GROUP1").exists()
    assert flushing(connection)


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

    from delivery import queue

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's own statement trace")
    queue.enqueue("bob@example.org", ["friend@remote.test"], b"From: bob@example.org\r\n\r\nhi\r\n")
    [run] = queue.claim_due(run="run-1")
    rows = queue.rows_of(run)
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
