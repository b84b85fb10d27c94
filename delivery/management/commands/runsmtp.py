"""`manage.py runsmtp`: the SMTP service (inbound MX, submission with STARTTLS, implicit TLS)."""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import signal
import sys
import traceback

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from delivery import listening
from delivery.smtp_server import Listener, run_loop, serve, warm_up

DEFAULTS = {"inbound": "127.0.0.1:2525", "submission": "127.0.0.1:2587", "submissions": "127.0.0.1:2465"}


def parse_listen(name: str, value: str) -> Listener | None:
    """`host:port`, `[v6]:port`, or `off`."""
    if value.strip().lower() == "off":
        return None
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise CommandError(f"--{name}: write an IPv6 address in brackets, like [::1]:2525 (got {value!r})")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--{name}: expected host:port, [v6]:port or off, got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host.replace("-", "").replace(".", "").isalnum():
            raise CommandError(f"--{name}: {host!r} is neither an IP address nor a host name") from None
    return Listener(name, host, int(port))


class Command(BaseCommand):
    help = "Run the SMTP service: inbound MX, submission (STARTTLS) and submissions (implicit TLS)."
    requires_system_checks: list = []   # start fast; `manage.py check` is the place for them

    def add_arguments(self, parser):
        for name, default in DEFAULTS.items():
            parser.add_argument(f"--{name}", default=default, metavar="HOST:PORT",
                                help=f"listen address, or 'off' (default {default})")
        parser.add_argument("--processes", type=int, default=None, metavar="N",
                            help="copies of the service sharing the listening sockets, each new "
                                 "connection going to the copy with the fewest; 0 = one per core "
                                 "(default: SMTP_PROCESSES, 1)")

    def handle(self, *args, **options):
        listeners = [listener for name in DEFAULTS if (listener := parse_listen(name, options[name]))]
        if not listeners:
            raise CommandError("every listener is off; nothing to run")
        # aiosmtpd logs every connection at INFO; our own transaction line says what matters.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        processes = settings.SMTP_PROCESSES if options["processes"] is None else options["processes"]
        if processes < 0:
            raise CommandError("--processes must be 0 (one per core) or more")
        processes = processes or os.cpu_count() or 1
        if processes > 1:
            return self._prefork(listeners, processes)
        try:
            run_loop(serve(listeners, ready=lambda: self._announce(listeners)))
        except OSError as exc:
            raise CommandError(f"cannot listen: {exc}") from exc

    def _prefork(self, listeners: list[Listener], count: int) -> None:
        """Fork `count` copies of the service sharing the sockets bound here; a new connection
        goes to the copy with the fewest open (delivery/listening.py). The service keeps no state
        that needs one process (DESIGN.md), so this is how it uses more than one core despite
        Python's GIL.
        SIGTERM or SIGINT to this parent stops every copy gracefully; if one copy dies, the
        others are stopped too and the command fails, so a supervisor sees it and restarts."""
        connections.close_all()     # a connection must never be shared across fork
        warm_up()   # once, before binding; the copies inherit it
        sockets: dict[str, list] = {}
        try:
            for listener in listeners:
                sockets[listener.name] = listening.bind(listener.host, listener.port)
        except OSError as exc:
            for bound in sockets.values():
                for sock in bound:
                    sock.close()
            raise CommandError(f"cannot listen: {exc}") from exc
        balance = listening.Balance(count)
        ready_r, ready_w = os.pipe()
        children: set[int] = set()
        parent = os.getpid()
        for copy in range(count):
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                _die_with(parent)
                balance.take_slot(copy)
                os._exit(_child(listeners, ready_w, sockets, balance))
            children.add(pid)
        os.close(ready_w)
        for bound in sockets.values():  # the copies hold them now
            for sock in bound:
                sock.close()
        stopping = False

        def stop(signum, _frame):
            nonlocal stopping
            stopping = True
            for child in children:
                _kill(child, signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        failed = self._wait_ready(ready_r, children, count)
        if failed:
            stop(signal.SIGTERM, None)
        else:
            self._announce(listeners)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            if os.waitstatus_to_exitcode(status) != 0 or not stopping:
                failed = failed or f"runsmtp process {pid} exited with status {os.waitstatus_to_exitcode(status)}"
                if not stopping:
                    stop(signal.SIGTERM, None)
        if failed:
            raise CommandError(failed)

    @staticmethod
    def _wait_ready(ready_r: int, children: set[int], count: int) -> str:
        """'' once every copy listens; else why not (a copy exited before it was ready)."""
        ready = 0
        while ready < count:
            readable, _, _ = select.select([ready_r], [], [], 0.2)
            got = os.read(ready_r, count) if readable else b""
            ready += len(got)
            if got:
                continue
            for child in list(children):    # nothing to read, or EOF: every copy has exited
                pid, status = os.waitpid(child, os.WNOHANG)
                if pid:
                    children.discard(pid)
                    return f"runsmtp process {pid} failed to start (status {os.waitstatus_to_exitcode(status)})"
        os.close(ready_r)
        return ""

    def _announce(self, listeners: list[Listener]) -> None:
        for listener in listeners:
            host = f"[{listener.host}]" if ":" in listener.host else listener.host
            self.stdout.write(f"runsmtp: {listener.name} on {host}:{listener.port}")
        self.stdout.flush()


def _child(listeners: list[Listener], ready_w: int, sockets: dict[str, list], balance: listening.Balance) -> int:
    """One forked copy of the service; returns its exit status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        run_loop(serve(listeners, ready=lambda: os.write(ready_w, b"r"), sockets=sockets, balance=balance))
    except OSError as exc:
        sys.stderr.write(f"runsmtp: cannot listen: {exc}\n")
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _die_with(parent: int) -> None:
    """A copy gets SIGTERM when the parent dies, even by SIGKILL, instead of serving on unseen."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:      # the parent died before prctl took effect
        os._exit(1)
