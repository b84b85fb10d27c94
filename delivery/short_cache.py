"""A few seconds of memory for answers the SMTP service asks the database for every message.

Under load the same hundred recipients and the same sender domains come back thousands of
times a minute; resolving each afresh (five or six ORM queries per RCPT) was a quarter of the
service's CPU time. DESIGN.md allows the service "short caches": an entry lives
SMTP_DIRECTORY_CACHE seconds at most, so a suspended or deleted mailbox, a new alias or a
removed domain takes effect within that time in every process. The size is bounded, oldest
entries go first.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save

_MISSING = object()


class ShortCache:
    def __init__(self, seconds: float, max_entries: int = 10000):
        self._seconds = seconds
        self.max_entries = max_entries
        self._entries: dict = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        entry = self._entries.get(key, _MISSING)
        if entry is _MISSING or entry[0] <= time.monotonic():
            return default
        return entry[1]

    @property
    def seconds(self) -> float:
        return self._seconds

    def put(self, key, value) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            self._entries.pop(key, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (time.monotonic() + self.seconds, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class DirectoryCache(ShortCache):
    """A ShortCache of SMTP_DIRECTORY_CACHE seconds (read when an entry is stored, so a changed
    setting applies at once) that this process empties whenever a row of one of `models` is
    saved or deleted; other processes see the change within the lifetime."""

    def __init__(self, name: str, *models, max_entries: int = 10000):
        super().__init__(0, max_entries)
        for model in models:
            for signal, event in ((post_save, "save"), (post_delete, "delete")):
                signal.connect(self._forget, sender=model, weak=False,
                               dispatch_uid=f"{name}-forget-{model.__name__}-{event}")

    @property
    def seconds(self) -> float:
        return getattr(settings, "SMTP_DIRECTORY_CACHE", 5.0)

    def _forget(self, **kwargs) -> None:
        self.clear()
