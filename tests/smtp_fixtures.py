"""The real SMTP service (`manage.py runsmtp`) as a subprocess on free loopback ports, and
small clients for talking to it: smtplib for ordinary conversations, a raw socket for the byte
sequences smtplib would never send (smuggling payloads, bare CR/LF, pipelined commands).
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, settle_database_writers, subprocess_env, wait_for_port


@dataclass
class SmtpService:
    proc: subprocess.Popen
    inbound: int
    submission: int
    submissions: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_smtp_service(log_path: Path, **env: str) -> SmtpService:
    """Start `manage.py runsmtp` seeing the test database; env overrides settings (limits...)."""
    ports = {name: free_port() for name in ("inbound", "submission", "submissions")}
    args = [sys.executable, "manage.py", "runsmtp"]
    for name, port in ports.items():
        args += [f"--{name}", f"127.0.0.1:{port}"]
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(**env), stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    service = SmtpService(proc, log_path=log_path, **ports)
    try:
        for port in ports.values():
            wait_for_port(port, proc=proc, timeout=30)
    except Exception:
        service.stop()
        raise RuntimeError(f"runsmtp did not start:\n{service.log()}") from None
    return service


def _dns_env(dns_server) -> dict[str, str]:
    # Every lookup of the service goes to the loopback nsd: nothing leaves the machine, and
    # names it does not serve fail at once (REFUSED) instead of timing out.
    # Tests change zones mid-test, so the service must not cache answers.
    # Likewise mailboxes: tests suspend and delete them mid-test (test_smtp_performance covers
    # the cache).
    return {"DNS_RESOLVERS": dns_server.address, "SMTP_DNS_CACHE": "false", "SMTP_DIRECTORY_CACHE": "0"}


@pytest.fixture
def smtp_service_factory(transactional_db, dns_server, tmp_path):
    """start(**env) -> SmtpService; every service started is stopped after the test."""
    started: list[SmtpService] = []

    def start(**env: str) -> SmtpService:
        service = start_smtp_service(tmp_path / f"runsmtp-{len(started)}.log", **{**_dns_env(dns_server), **env})
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def smtp_service(smtp_service_factory):
    """The real `manage.py runsmtp` on free ports: .inbound, .submission, .submissions."""
    return smtp_service_factory()


def client_tls() -> ssl.SSLContext:
    """The service's certificate is self-signed in tests; clients accept it, as a user would."""
    return ssl._create_unverified_context()


class RawSession:
    """A byte-exact SMTP conversation: send what we want, read replies as the server wrote them."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10, source: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def reply(self) -> str:
        """One complete (possibly multi-line) reply; the lines joined with newlines."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed; got {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", errors="replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def close(self) -> None:
        self.sock.close()

    def closed_by_server(self, wait: float = 5) -> bool:
        deadline = time.monotonic() + wait
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False


def welcomed_session(port: int, source: str = "127.0.0.1", within: float = 10.0) -> RawSession:
    """A session that got its 220. The server frees a client's slot under
    SMTP_MAX_CONNECTIONS_PER_IP only once it has seen the client close, a moment later under
    load; until then a new session is refused with 421. The earlier clients include the
    fixture's own readiness probes. Refused for good, it is still refused after `within`."""
    deadline = time.monotonic() + within
    while True:
        session = RawSession(port, source=source)
        if session.greeting.startswith("220") or time.monotonic() > deadline:
            return session
        session.close()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def _module_smtp_service(django_db_setup, tmp_path_factory):
    from tests.dns_server import LoopbackDns
    from tests.support import need_program

    workdir = tmp_path_factory.mktemp("smtp-module")
    dns = LoopbackDns(workdir, need_program("nsd"))
    dns.zones["dns-ready.test"] = []
    dns.restart()
    mail_root = workdir / "mail"
    service = start_smtp_service(workdir / "runsmtp.log", DNS_RESOLVERS=dns.address, SMTP_DNS_CACHE="false",
                                 SMTP_DIRECTORY_CACHE="0", MAIL_ROOT=str(mail_root),
                                 MAIL_HOSTNAME="mail.mailhost.test")
    service.mail_root = mail_root
    service.dns = dns          # tests may publish zones: dns.zone("sender.test", ...)
    yield service
    service.stop()
    dns.stop()


@pytest.fixture
def shared_smtp_service(_module_smtp_service, transactional_db, settings):
    """One runsmtp for a whole test module, for tests that need no special settings and leave
    no state behind in the service (it keeps only connection counts and the AUTH cache).
    The Maildir tree is emptied before each test."""
    shutil.rmtree(_module_smtp_service.mail_root, ignore_errors=True)
    settings.MAIL_ROOT = _module_smtp_service.mail_root
    yield _module_smtp_service
    settle_database_writers()
