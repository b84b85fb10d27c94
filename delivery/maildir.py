"""Maildir delivery that survives a crash at any instant (durable before the SMTP 250).

The file is written under tmp/, fsynced, renamed into new/, and new/ itself is fsynced so the
rename is on disk too. Names follow Dovecot's convention `<time>.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>`
so Dovecot's quota code can read the size from the name.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import time
from pathlib import Path

_counter = itertools.count(1)
SUBDIRS = ("cur", "new", "tmp")


def ensure_maildir(path: Path) -> None:
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)


def _unique_name(size: int) -> str:
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return (f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{next(_counter)}"
            f"R{secrets.token_hex(8)}.{host},S={size}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def deliver(maildir: Path, data: bytes) -> Path:
    """Store `data` as a new message in `maildir` and return its final path."""
    name = _unique_name(len(data))
    tmp = maildir / "tmp" / name
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:   # a new mailbox: create its folders once, not three mkdirs a message
        ensure_maildir(maildir)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    final = maildir / "new" / name
    try:
        os.rename(tmp, final)
    except FileNotFoundError:   # new/ went missing under a live tmp/
        ensure_maildir(maildir)
        os.rename(tmp, final)
    _fsync_dir(maildir / "new")
    return final


def maildir_size(maildir: Path) -> int:
    """Bytes of mail held in every folder of a Maildir++ tree (for quota recounts)."""
    total = 0
    for root, _dirs, files in os.walk(maildir):
        if os.path.basename(root) not in ("cur", "new"):
            continue
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total
