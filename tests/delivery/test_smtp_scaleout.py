"""What the SMTP service does to go faster must not change what it accepts: the short RCPT
cache lets suspensions and deletions through within its lifetime, batched writes stay
committed before 250, and `runsmtp --processes N` serves on every copy, gives each new connection
to the copy with the fewest, and stops cleanly."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError

from delivery import db_writes
from delivery.models import MessageLog
from mailboxes.models import Mailbox
from tests.support import ROOT, free_port, subprocess_env

MESSAGE = b"From: someone@elsewhere.test\r\nSubject: hello\r\n\r\nbody\r\n"


def rcpt_reply(port: int, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.test")
        client.mail("someone@elsewhere.test")
        return client.rcpt(address)


def wait_for_reply(port: int, address: str, code: int, within: float) -> tuple[int, bytes]:
    deadline = time.monotonic() + within
    while True:
        reply = rcpt_reply(port, address)
        if reply[0] == code or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_a_mailbox_suspended_while_its_verdict_is_cached_is_refused_once_the_cache_expires(
        smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_DIRECTORY_CACHE="1")
    assert rcpt_reply(service.inbound, "bob@example.org")[0] == 250
    Mailbox.objects.filter(pk=bob.pk).update(active=False)
    code, text = wait_for_reply(service.inbound, "bob@example.org", 550, within=10)
    assert (code, text[:5]) == (550, b"5.2.1")


def test_a_deleted_mailbox_is_unknown_once_the_cache_expires(smtp_service_factory, bob):
    service = smtp_service_factory(SMTP_DIRECTORY_CACHE="1")
    assert rcpt_reply(service.inbound, "bob@example.org")[0] == 250
    bob.delete()
    code, text = wait_for_reply(service.inbound, "bob@example.org", 550, within=10)
    assert (code, text[:5]) == (550, b"5.1.1")


def test_a_cached_verdict_still_refuses_a_mailbox_that_fills_up(smtp_service_factory, bob):
    """The service counts what it stored into the cached mailbox, so the quota check of the next
    message sees it (the database counter is updated too)."""
    service = smtp_service_factory(SMTP_DIRECTORY_CACHE="60")
    Mailbox.objects.filter(pk=bob.pk).update(quota=5000, used_bytes=0)
    message = MESSAGE + b"x" * 76 + b"\r\n" * 1 + (b"y" * 76 + b"\r\n") * 36     # about 3 KB
    with smtplib.SMTP("127.0.0.1", service.inbound, timeout=20) as client:
        assert client.sendmail("someone@elsewhere.test", ["bob@example.org"], message) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("someone@elsewhere.test", ["bob@example.org"], message)
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (452, b"4.2.2")
    assert len(list((bob.maildir / "new").iterdir())) == 1


def test_batched_writes_are_committed_when_run_returns_and_a_failing_one_fails_alone(transactional_db, bob):
    db_writes.start()
    try:
        def log_row(n: int):
            return db_writes.run(MessageLog.objects.create, domain=bob.domain, direction="inbound",
                                 result="accepted", queue_id=f"Q{n}")

        with ThreadPoolExecutor(8) as pool:
            rows = list(pool.map(log_row, range(40)))
            with pytest.raises(IntegrityError):      # no such domain: the foreign key refuses it
                pool.submit(db_writes.run, MessageLog.objects.create, domain_id=999999, direction="inbound",
                            result="accepted", queue_id="BAD").result()
    finally:
        db_writes.stop()
    assert len(rows) == 40
    assert sorted(MessageLog.objects.values_list("queue_id", flat=True)) == sorted(f"Q{n}" for n in range(40))


def writes_in_one_batch(writes: list):
    """Run `writes` (callables) in threads while the writer is held inside another group commit,
    so that they all wait in its queue and go in its next batch together; their outcomes."""
    from django.db import connections

    held, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(len(writes) + 1) as pool:
        holder = pool.submit(db_writes.run, lambda: (held.set(), release.wait(10)))
        assert held.wait(10)
        futures = [pool.submit(write) for write in writes]
        while db_writes._writer.queue.qsize() < len(writes):
            time.sleep(0.01)
        release.set()
        holder.result()
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:     # noqa: BLE001 - the outcome under test
                outcomes.append(exc)
    connections.close_all()
    return outcomes


def queue_row(queue_id: str):
    from delivery.models import QueuedMessage

    return db_writes.row_values([QueuedMessage(queue_id=queue_id, sender="bob@example.org", data=b"x", size=1)])[0]


def recipient_rows(*addresses: str):
    from delivery.models import QueuedRecipient

    return db_writes.new_row_values(QueuedRecipient, [
        {"message_id": None, "address": a, "domain": a.split("@")[1]} for a in addresses])


def test_on_postgresql_a_batch_of_queued_messages_and_log_rows_is_one_statement(transactional_db, bob, monkeypatch):
    """BEGIN, each message's INSERT ... RETURNING and its recipients' INSERT, the log rows and
    COMMIT become one statement that commits as it ends; every message gets its own key and
    its recipients point at it."""
    from django.db import connection

    from delivery.models import QueuedMessage, QueuedRecipient

    if connection.vendor != "postgresql":
        pytest.skip("data-modifying WITH queries are PostgreSQL's")
    seen = []

    def statement(sql, params, **kwargs):
        if threading.current_thread().name == "smtp-db-writer":
            seen.append((sql.split()[0], connection.in_atomic_block))
        return real_statement(sql, params, **kwargs)

    real_statement = db_writes._statement
    monkeypatch.setattr(db_writes, "_statement", statement)
    db_writes.start()
    try:
        keys = writes_in_one_batch(
            [lambda n=n: db_writes.insert_linked(QueuedMessage, queue_row(f"Q{n}"), QueuedRecipient,
                                                 recipient_rows(*(f"r{k}@m{n}.test" for k in range(n + 1))),
                                                 "message") for n in range(3)]
            + [lambda: db_writes.insert_new(MessageLog, [{"direction": "submission", "result": "accepted",
                                                          "queue_id": "LOGGED"}])])
    finally:
        db_writes.stop()
    assert seen[-1] == ("WITH", False) and seen.count(("WITH", False)) == 1
    for n, key in enumerate(keys[:3]):
        message = QueuedMessage.objects.get(pk=key)
        assert message.queue_id == f"Q{n}"
        assert sorted(message.recipients.values_list("address", flat=True)) == [f"r{k}@m{n}.test" for k in range(n + 1)]
    assert MessageLog.objects.filter(queue_id="LOGGED").exists()


def test_a_message_too_large_for_one_statement_is_queued_in_several_and_one_without_recipients_alone(
        transactional_db, bob, monkeypatch):
    """A statement takes at most 65,535 parameters: past MAX_PARAMETERS the message and its
    recipients go as separate INSERTs in one transaction."""
    from delivery.models import QueuedMessage, QueuedRecipient

    monkeypatch.setattr(db_writes, "MAX_PARAMETERS", 40)
    sent = []
    real_statement = db_writes._statement
    monkeypatch.setattr(db_writes, "_statement", lambda sql, *a, **k: sent.append(sql.split()[0]) or real_statement(
        sql, *a, **k))
    addresses = [f"r{n}@many.test" for n in range(8)]
    many = db_writes.insert_linked(QueuedMessage, queue_row("MANY"), QueuedRecipient, recipient_rows(*addresses),
                                   "message")
    assert sent == ["INSERT", "INSERT"]
    alone = db_writes.insert_linked(QueuedMessage, queue_row("ALONE"), QueuedRecipient, [], "message")
    assert sorted(QueuedRecipient.objects.filter(message_id=many).values_list("address", flat=True)) == addresses
    assert QueuedMessage.objects.get(pk=alone).queue_id == "ALONE" and not QueuedRecipient.objects.filter(
        message_id=alone).exists()


def test_a_message_that_cannot_be_queued_fails_alone_in_its_batch(transactional_db, bob):
    from delivery.models import QueuedMessage, QueuedRecipient

    QueuedMessage.objects.create(queue_id="TAKEN", sender="bob@example.org", data=b"x", size=1)
    db_writes.start()
    try:
        outcomes = writes_in_one_batch([
            lambda queue_id=queue_id: db_writes.insert_linked(QueuedMessage, queue_row(queue_id), QueuedRecipient,
                                                              recipient_rows(f"to@{queue_id.lower()}.test"), "message")
            for queue_id in ("FIRST", "TAKEN", "LAST")])
    finally:
        db_writes.stop()
    assert isinstance(outcomes[1], IntegrityError)
    assert sorted(QueuedRecipient.objects.values_list("message__queue_id", "address")) == [
        ("FIRST", "to@first.test"), ("LAST", "to@last.test")]
    assert [QueuedMessage.objects.get(queue_id=q).pk for q in ("FIRST", "LAST")] == [outcomes[0], outcomes[2]]


def test_bookkeeping_rides_in_the_next_waited_commit_and_stop_flushes_what_is_left(
        transactional_db, bob, monkeypatch):
    monkeypatch.setattr(db_writes, "BOOKKEEPING_DELAY", 30)
    db_writes.start()
    try:
        db_writes.insert([MessageLog(domain=bob.domain, direction="inbound", result="accepted", queue_id="LOG1")])
        time.sleep(0.3)
        assert not MessageLog.objects.exists()     # no commit of its own for a log row
        db_writes.run(MessageLog.objects.create, domain=bob.domain, direction="inbound", result="accepted",
                      queue_id="WAITED")
        # Committed together: the log row did not wait out its 30 seconds alone.
        assert set(MessageLog.objects.values_list("queue_id", flat=True)) == {"LOG1", "WAITED"}
        db_writes.insert([MessageLog(domain=bob.domain, direction="inbound", result="accepted", queue_id="LOG2")])
        started = time.monotonic()
    finally:
        db_writes.stop()
    assert time.monotonic() - started < 10
    assert MessageLog.objects.filter(queue_id="LOG2").exists()


def test_a_service_thread_checks_its_database_connection_once_a_second_not_per_command(db, monkeypatch):
    checks = []
    monkeypatch.setattr(db_writes, "close_old_connections", lambda: checks.append(1))
    monkeypatch.setattr(db_writes, "_last_check", threading.local())
    Mailbox.objects.exists()  # the thread has a connection
    for _ in range(100):
        db_writes.refresh_connection()
    assert len(checks) == 1
    db_writes._last_check.at -= 1.5
    db_writes.refresh_connection()
    assert len(checks) == 2


def test_after_a_database_error_a_service_thread_gets_a_fresh_connection_at_once(transactional_db):
    from django.db import DatabaseError, connection

    db_writes.refresh_connection()
    Mailbox.objects.exists()
    connection.connection.close()  # the database went away under an open connection
    with pytest.raises(DatabaseError):
        Mailbox.objects.exists()
    db_writes.refresh_connection()  # within the second: still replaced, because of the error
    assert Mailbox.objects.exists() is False


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_runsmtp_with_two_processes_serves_on_one_port_and_stops_on_sigterm(transactional_db, tmp_path, bob):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "manage.py", "runsmtp", "--processes", "2", "--inbound",
                             f"127.0.0.1:{port}", "--submission", "off", "--submissions", "off"], cwd=ROOT,
                            env=subprocess_env(DNS_RESOLVERS="127.0.0.1:9"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        announced = f"runsmtp: inbound on 127.0.0.1:{port}"
        lines = iter(proc.stdout.readline, b"")
        assert any(line.decode().strip() == announced for line in lines)
        children = _children(proc.pid)
        assert len(children) == 2
        for _ in range(6):
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                assert client.sendmail("someone@elsewhere.test", ["bob@example.org"], MESSAGE) == {}
        assert len(list((bob.maildir / "new").iterdir())) == 6
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert not any(os.path.exists(f"/proc/{child}") for child in children)


class two_copies:
    """`runsmtp --processes 2` on an inbound port: (port, the two copies' pids)."""

    def __enter__(self) -> tuple[int, list[int]]:
        port = free_port()
        self.proc = subprocess.Popen([sys.executable, "manage.py", "runsmtp", "--processes", "2", "--inbound",
                                      f"127.0.0.1:{port}", "--submission", "off", "--submissions", "off"], cwd=ROOT,
                                     env=subprocess_env(DNS_RESOLVERS="127.0.0.1:9"), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        announced = f"runsmtp: inbound on 127.0.0.1:{port}"
        assert any(line.decode().strip() == announced for line in iter(self.proc.stdout.readline, b""))
        return port, _children(self.proc.pid)

    def __exit__(self, *exc):
        for child in _children(self.proc.pid):
            os.kill(child, signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


def _copy_serving(client: smtplib.SMTP, copies: list[int]) -> int:
    """The copy whose socket is the other end of `client`'s connection (by /proc/net/tcp)."""
    client_port = client.sock.getsockname()[1]
    server_port = client.sock.getpeername()[1]
    inodes = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in copies:
        fds = f"/proc/{pid}/fd"
        if any(os.readlink(f"{fds}/{fd}") in inodes for fd in os.listdir(fds)):
            return pid
    raise AssertionError("no copy holds the connection")


def _greeted(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=20)     # returns once the greeting is read
    client.ehlo("client.test")
    return client


def test_runsmtp_copies_take_new_connections_in_turn_by_how_many_each_holds(transactional_db):
    """Long-lived submission sessions all on one copy left the other cores idle (SO_REUSEPORT
    hashed them blindly): a new connection goes to the copy with the fewest open."""
    with two_copies() as (port, copies):
        clients = [_greeted(port) for _ in range(4)]
        serving = [_copy_serving(client, copies) for client in clients]
        assert sorted(serving.count(pid) for pid in copies) == [2, 2]
        first_copy = serving[0]
        clients[0].quit()
        clients[2 if serving[2] == first_copy else 1 if serving[1] == first_copy else 3].quit()
        time.sleep(0.5)     # the copy sees both sessions end
        newcomers = [_greeted(port) for _ in range(2)]
        assert [_copy_serving(client, copies) for client in newcomers] == [first_copy, first_copy]
        for client in newcomers + clients:
            client.close()


def test_a_copy_that_hangs_does_not_keep_new_connections_waiting(transactional_db):
    with two_copies() as (port, copies):
        busy = _greeted(port)
        idle_copy = next(pid for pid in copies if pid != _copy_serving(busy, copies))
        os.kill(idle_copy, signal.SIGSTOP)
        started = time.monotonic()
        newcomer = _greeted(port)
        assert _copy_serving(newcomer, copies) != idle_copy
        assert time.monotonic() - started < 5
        assert newcomer.noop()[0] == 250
        newcomer.quit()
        busy.quit()


def test_runsmtp_fails_when_its_processes_cannot_listen(transactional_db):
    with socket_in_use() as port:
        result = subprocess.run([sys.executable, "manage.py", "runsmtp", "--processes", "2", "--inbound",
                                 f"127.0.0.1:{port}", "--submission", "off", "--submissions", "off"], cwd=ROOT,
                                env=subprocess_env(DNS_RESOLVERS="127.0.0.1:9"), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode != 0
    assert "cannot listen" in result.stderr


class socket_in_use:
    """A port held by a listener without SO_REUSEPORT, so nobody else may bind it."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def test_the_copies_of_runsmtp_stop_when_their_parent_is_killed(transactional_db):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "manage.py", "runsmtp", "--processes", "2", "--inbound",
                             f"127.0.0.1:{port}", "--submission", "off", "--submissions", "off"], cwd=ROOT,
                            env=subprocess_env(DNS_RESOLVERS="127.0.0.1:9"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    announced = f"runsmtp: inbound on 127.0.0.1:{port}"
    assert any(line.decode().strip() == announced for line in iter(proc.stdout.readline, b""))
    children = _children(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{child}") for child in children) and time.monotonic() < deadline:
        for child in children:
            try:
                os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.1)
    assert not any(_alive(child) for child in children)


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_copies_starting_together_on_a_fresh_checkout_agree_on_one_self_signed_pair(settings, tmp_path):
    import multiprocessing

    from delivery import tls

    def start(barrier, failures):
        barrier.wait()
        try:
            tls.server_context()   # loads the pair: a key beside another copy's certificate fails
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            failures.put(repr(exc))

    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        settings.TLS_DIR = tmp_path / f"tls-{attempt}"
        barrier, failures = context.Barrier(8), context.Queue()
        copies = [context.Process(target=start, args=(barrier, failures)) for _ in range(8)]
        for copy in copies:
            copy.start()
        for copy in copies:
            copy.join(30)
        assert failures.empty(), failures.get()
        assert sorted(p.name for p in settings.TLS_DIR.iterdir() if p.suffix == ".pem") == \
            ["smtp-cert.pem", "smtp-key.pem"]


def test_smtp_processes_zero_runs_one_copy_per_core_without_the_option(transactional_db):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "manage.py", "runsmtp", "--inbound", f"127.0.0.1:{port}",
                             "--submission", "off", "--submissions", "off"], cwd=ROOT,
                            env=subprocess_env(DNS_RESOLVERS="127.0.0.1:9", SMTP_PROCESSES="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        announced = f"runsmtp: inbound on 127.0.0.1:{port}"
        assert any(line.decode().strip() == announced for line in iter(proc.stdout.readline, b""))
        assert len(_children(proc.pid)) == (os.cpu_count() or 1) or os.cpu_count() == 1
    finally:
        proc.kill()
        proc.wait()
    result = subprocess.run([sys.executable, "manage.py", "runsmtp", "--processes", "-1"], cwd=ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--processes must be 0 (one per core) or more" in result.stderr
