"""`manage.py runsmtp`: the SMTP service (inbound MX, submission with STARTTLS, implicit TLS)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from django.core.management.base import BaseCommand, CommandError

from delivery.smtp_server import Listener, serve

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

    def handle(self, *args, **options):
        listeners = [listener for name in DEFAULTS if (listener := parse_listen(name, options[name]))]
        if not listeners:
            raise CommandError("every listener is off; nothing to run")
        # aiosmtpd logs every connection at INFO; our own transaction line says what matters.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        try:
            asyncio.run(serve(listeners, ready=lambda: self._announce(listeners)))
        except OSError as exc:
            raise CommandError(f"cannot listen: {exc}") from exc

    def _announce(self, listeners: list[Listener]) -> None:
        for listener in listeners:
            host = f"[{listener.host}]" if ":" in listener.host else listener.host
            self.stdout.write(f"runsmtp: {listener.name} on {host}:{listener.port}")
        self.stdout.flush()
