"""Helpers shared by tests and fixtures: ports, external programs, child-process environment."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def settle_database_writers(timeout: float = 5.0) -> None:
    """Wait until no other connection to the test database is inside a transaction.

    The SMTP service commits log rows just behind its reply; a test that ends at once would
    otherwise TRUNCATE (pytest-django's flush, PostgreSQL) while that commit runs, and the two
    can deadlock, the flush losing. SQLite's flush simply waits for the lock."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    quiet = 0
    with connection.cursor() as cursor:
        while quiet < 3 and time.monotonic() < deadline:     # quiet three looks in a row
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')")
            quiet = quiet + 1 if cursor.fetchone()[0] == 0 else 0
            time.sleep(0.02)


def eventually(probe, timeout: float = 10.0, interval: float = 0.02):
    """The first truthy value of `probe()` within `timeout` seconds. For what a service writes just
    behind its reply (the SMTP service's message-log rows and quota counters)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout} s"
            return value
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_program(name: str) -> str:
    """Path of an external program; skip locally, fail under CI=true, when it is missing."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        message = f"{name} is not installed (apt-get install the package that provides it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (SMTP service, worker) that sees the test database."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = (
            f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
            f"/{db['NAME']}"
        )
    env["MAIL_ROOT"] = str(settings.MAIL_ROOT)
    env["MAIL_HOSTNAME"] = settings.MAIL_HOSTNAME
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env
