"""The SMTP service's small writes (quota counters, message-log rows): many per transaction.

Every accepted message costs two tiny writes. One transaction each meant, on SQLite, sixteen
worker threads racing for its single writer lock and sleeping in its busy handler with growing
back-off (1, 2, 5 ... 100 ms) although each write takes a fraction of a millisecond; and on
PostgreSQL one WAL flush per write. In the service, `run` hands the write to one writer thread
that commits everything waiting in one transaction (group commit) and only then lets each
caller go on, so a write is as committed as before when `run` returns, and nothing is lost on
shutdown. Outside the service (webmail, commands, tests) `run` simply calls the function.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from contextlib import nullcontext

from django.db import close_old_connections, connection, transaction

log = logging.getLogger("mailhost.smtp")
MAX_BATCH = 500
_sqlite_writer = threading.Lock()
_writer: Writer | None = None


def run(fn, *args, **kwargs):
    """fn(*args, **kwargs) committed before this returns; its result, or its exception."""
    writer = _writer
    if writer is None:
        # Threads of one process still take turns in Python rather than in SQLite's busy handler.
        with _sqlite_writer if connection.vendor == "sqlite" else nullcontext():
            return fn(*args, **kwargs)
    future: Future = Future()
    writer.queue.put((fn, args, kwargs, future))
    return future.result()


class Writer(threading.Thread):
    def __init__(self):
        super().__init__(name="smtp-db-writer", daemon=True)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while batch[-1] is not None and len(batch) < MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            items = [item for item in batch if item is not None]
            if items:
                self._commit(items)
            if stop:
                close_old_connections()
                connection.close()
                return

    @staticmethod
    def _commit(items: list) -> None:
        close_old_connections()
        try:
            with transaction.atomic():
                results = [fn(*args, **kwargs) for fn, args, kwargs, _ in items]
        except Exception:
            # One failing write must not fail its neighbours: retry each in its own transaction.
            log.warning("batched write failed; retrying %d writes one by one", len(items), exc_info=True)
            for fn, args, kwargs, future in items:
                try:
                    with transaction.atomic():
                        result = fn(*args, **kwargs)
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            return
        for (_, _, _, future), result in zip(items, results, strict=True):
            future.set_result(result)


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
