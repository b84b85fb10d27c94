"""SQLite for processes that share one database file: writers take turns without sleeping.

Web, SMTP service and worker each open the same file, and every transaction begins with
`BEGIN IMMEDIATE`, which takes SQLite's single write lock. A writer that finds it taken goes
to SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries whatever
the holder does: under load a delivery worker spent two thirds of its time asleep there while
the lock was held for well under a millisecond at a time. Here a writer first takes its turn
on a lock file beside the database (flock: the kernel frees it when a holder dies), and a writer
that gives its turn up writes a byte to a FIFO beside it, on which the waiting writers sleep in
select(): the turn passes on the moment it is free. Polling at fixed intervals instead, the
waiters of four processes spent a fifth of the benchmark's run asleep after the turn was free
(up to a millisecond a time), and their SMTP sessions and deliveries with them. The poll stays
as the fallback for a holder that died without writing its byte. Threads of one process first
queue on a lock of the process's own, so that one of them at a time waits on the file and the
FIFO. SQLite's own lock still decides: a writer that does not queue here (another program, an
autocommit statement) meets the busy handler as before, and a turn not won within the
configured timeout is left to it too.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import threading
import time

from django.db.backends.sqlite3 import base

FIRST_POLL = 0.00005
LONGEST_POLL = 0.001     # how late a waiter notices a holder that died without waking anyone

_release_channels: dict[str, int | None] = {}   # database file -> this process's FIFO descriptor
_channels_lock = threading.Lock()
_process_turns: dict[str, threading.Lock] = {}   # database file -> this process's place in the queue


def process_turn(database: str) -> threading.Lock:
    """The lock a process's own writers queue on before the turn file: a process with several
    writing threads (a worker's delivery lanes) then sends one of them to the turn file, and
    the rest sleep on this lock and are woken one at a time, instead of every one of them
    waking at each byte on the FIFO to find the turn taken again."""
    lock = _process_turns.get(database)
    if lock is None:
        with _channels_lock:
            lock = _process_turns.setdefault(database, threading.Lock())
    return lock


# A child forked while one of the parent's threads held a process lock would inherit it held
# for ever: the child makes its own (the turn file and the FIFO are shared on purpose).
os.register_at_fork(after_in_child=_process_turns.clear)


def release_channel(database: str) -> int | None:
    """This process's descriptor of the FIFO on which writers announce a turn given up; None
    where there can be none (a read-only directory), and the waiters then only poll.

    Opened read-write and non-blocking: a byte written never blocks or fails for want of a
    reader, and a waiter's read never blocks. One descriptor serves every thread and, inherited
    across fork (runsmtp's copies, Celery's pool), every child: it is the same FIFO.
    """
    if database in _release_channels:
        return _release_channels[database]
    with _channels_lock:
        if database not in _release_channels:
            _release_channels[database] = _open_fifo(f"{database}-writers-wake")
        return _release_channels[database]


def _open_fifo(path: str) -> int | None:
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _wait_for_release(channel: int | None, timeout: float) -> None:
    """Sleep until a writer gives its turn up or `timeout` passes; bytes left by releases that
    nobody waited for wake the next waiter once, who finds the turn taken and waits again."""
    if channel is not None:
        try:
            readable, _, _ = select.select([channel], [], [], timeout)
        except (OSError, ValueError):   # the descriptor is gone: poll as without one
            channel = None
    if channel is None:
        time.sleep(timeout)
        return
    if readable:
        try:
            while os.read(channel, 65536):
                pass
        except OSError:     # drained (EAGAIN)
            pass


def _announce_release(channel: int | None) -> None:
    """Never raises: it runs after COMMIT, and an error there would make a committed write
    look failed (and be made again)."""
    if channel is not None:
        try:
            os.write(channel, b"\0")
        except OSError:
            pass    # full of bytes nobody has read yet (the next waiter wakes anyway), or gone


class DatabaseWrapper(base.DatabaseWrapper):
    _turn_fd: int | None = None
    _has_turn = False
    _own_turn: threading.Lock | None = None
    _wal_fd: int | None = None

    def wal_descriptor_copy(self) -> int | None:
        """A descriptor of the write-ahead log that the caller syncs (fdatasync, as SQLite
        itself does on Linux) and closes, after committing without synchronous=FULL's sync
        inside COMMIT, where the writer lock is held (delivery.db_writes.atomic_sync_deferred).
        A copy: this connection closing its own cannot pull it from under another thread, and
        it keeps naming the file the commit went to; while any connection is open SQLite keeps
        the same log file, so this connection's own descriptor is never stale."""
        return None if self.is_in_memory_db() else os.dup(self._wal_descriptor())

    def _wal_descriptor(self) -> int:
        if self._wal_fd is None:
            self._wal_fd = os.open(f"{self.settings_dict['NAME']}-wal", os.O_RDONLY)
        return self._wal_fd

    def _start_transaction_under_autocommit(self):
        self._take_turn()
        try:
            if self.queries_logged or self.execute_wrappers or self.transaction_mode is None:
                super()._start_transaction_under_autocommit()
            else:
                # Straight to sqlite3: Django's cursor and its wrappers cost more than the BEGIN,
                # once per transaction in every process. While queries are recorded or
                # wrapped, Django's own path runs, so the BEGIN is seen.
                with self.wrap_database_errors:
                    self.connection.execute(f"BEGIN {self.transaction_mode}")
        except BaseException:
            self._give_turn()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._give_turn()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._give_turn()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._give_turn()
            if self._turn_fd is not None:
                os.close(self._turn_fd)
                self._turn_fd = None
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

    def _turn_file(self) -> int | None:
        """One descriptor per connection: flock excludes descriptors, threads included."""
        if self._turn_fd is None and self.transaction_mode == "IMMEDIATE" and not self.is_in_memory_db():
            self._turn_fd = os.open(f"{self.settings_dict['NAME']}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        return self._turn_fd

    def _take_turn(self) -> None:
        fd = self._turn_file()
        if fd is None or self._has_turn:
            return
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        started = time.monotonic()
        own = process_turn(self.settings_dict["NAME"])
        if not own.acquire(timeout=timeout):
            return  # SQLite's busy handler decides, and reports "database is locked"
        try:
            self._take_turn_file(fd, max(0.0, timeout - (time.monotonic() - started)))
        finally:
            if self._has_turn:
                self._own_turn = own
            else:
                own.release()

    def _take_turn_file(self, fd: int, timeout: float) -> None:
        deadline = None
        channel = release_channel(self.settings_dict["NAME"])
        # With a channel the poll is only the fallback, and each early timeout a needless wake.
        pause = FIRST_POLL if channel is None else LONGEST_POLL
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                elif now > deadline:
                    return  # SQLite's busy handler decides, and reports "database is locked"
                _wait_for_release(channel, min(pause, max(deadline - now, 0.0)))
                pause = min(pause * 2, LONGEST_POLL)
            else:
                self._has_turn = True
                return

    def _give_turn(self) -> None:
        if self._has_turn:
            self._has_turn = False
            try:
                fcntl.flock(self._turn_fd, fcntl.LOCK_UN)
                _announce_release(release_channel(self.settings_dict["NAME"]))
            finally:
                own, self._own_turn = self._own_turn, None
                if own is not None:
                    own.release()
