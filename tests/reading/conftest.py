"""A real Dovecot started on high loopback ports with the configuration `dovecotconf` prints.

Dovecot never reads mail as root, so MAIL_ROOT belongs to an unprivileged account (in
production: the account that runs mailhost; here, when the suite runs as root: `nobody`), and
messages are delivered with that account's effective uid, as the SMTP service running under it
would write them.
"""

from __future__ import annotations

import contextlib
import imaplib
import io
import os
import poplib
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.support import free_port, need_program, wait_for_port


def _mail_account() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


@contextlib.contextmanager
def as_mail_account():
    """Write files as the mail account (only needed when the suite runs as root)."""
    uid, gid = _mail_account()
    if os.geteuid() != 0:
        yield
        return
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def client_tls() -> ssl.SSLContext:
    """The test trusts the self-signed certificate made for MAIL_HOSTNAME: TLS is what is tested."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Dovecot:
    imap_port: int
    pop3_port: int
    log: Path

    def imap(self, login: str | None = None, password: str | None = None) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=15)
        client.starttls(ssl_context=client_tls())
        if login is not None:
            client.login(login, password)
        return client

    def pop3(self, login: str, password: str) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.pop3_port, timeout=15)
        client.stls(client_tls())
        client.user(login)
        client.pass_(password)
        return client


class RemoteIMAP(imaplib.IMAP4):
    """An IMAP client that connects from 127.0.0.2: Dovecot treats a client whose address equals
    the server's (127.0.0.1 -> 127.0.0.1) as secure, like TLS; any other address is a network client."""

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.2", 0))


class RemotePOP3(poplib.POP3):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.2", 0))


@pytest.fixture
def mail_root(settings, tmp_path):
    """A Maildir tree owned by the mail account and reachable by it (pytest's tmp is root-only)."""
    root = Path(tempfile.mkdtemp(prefix="mailhost-mail-"))
    os.chmod(root, 0o755)
    uid, gid = _mail_account()
    os.chown(root, uid, gid)
    settings.MAIL_ROOT = root
    settings.MAIL_HOSTNAME = "mail.mailhost.test"
    settings.MAIL_PUBLIC_IPS = ["127.0.0.1"]
    settings.TLS_DIR = tmp_path / "tls"
    settings.SMTP_TLS_CERT = settings.SMTP_TLS_KEY = ""
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot(transactional_db, mail_root, tmp_path):
    program = need_program("dovecot")
    imap_port, pop3_port = free_port(), free_port()
    base = tmp_path / "dovecot"
    base.mkdir()
    out = io.StringIO()
    call_command("dovecotconf", "--base-dir", str(base), "--imap", f"127.0.0.1:{imap_port}",
                 "--pop3", f"127.0.0.1:{pop3_port}", stdout=out)
    conf = base / "dovecot.conf"
    conf.write_text(out.getvalue())
    with open(base / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen([program, "-F", "-c", str(conf)], stdout=stderr, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(imap_port, proc=proc)
            wait_for_port(pop3_port, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            logs = "".join(p.read_text(errors="replace") for p in base.glob("*.log"))
            raise RuntimeError(f"dovecot did not start: {exc}\n{logs}") from None
        yield Dovecot(imap_port, pop3_port, base / "dovecot.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def deliver(mailbox, data: bytes, sender: str = "sender@remote.test") -> str:
    """Accept a message for `mailbox` through the one acceptance path, as the mail account."""
    from delivery.models import QueuedMessage
    from delivery.storage import store_message

    with as_mail_account():
        stored = store_message(sender, [mailbox], [], data, source=QueuedMessage.Source.INBOUND)
    return stored.local_paths[mailbox.address]


def hand_to_mail_account(root: Path) -> None:
    """Give files a root-run SMTP service wrote to the mail account, which in production would
    have written them itself (the suite runs as root; Dovecot never reads mail as root)."""
    if os.geteuid() != 0:
        return
    uid, gid = _mail_account()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid)
