"""A real authoritative DNS server (Debian's nsd) on a loopback port, for tests.

Tests publish zones as zone-file lines; the server is restarted when zones change (nsd starts
in a few milliseconds). The `dns_server` fixture points `DNS_RESOLVERS` and dnspython's default
resolver (which pyspf and dkimpy use) at it, so no lookup leaves the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver
import pytest

from tests.support import free_port, need_program

SOA = "@ 300 IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 60\n@ 300 IN NS ns.{origin}.\n"


class LoopbackDns:
    def __init__(self, workdir: Path, nsd: str):
        self.workdir = workdir
        self.nsd = nsd
        self.port = free_port()
        self.zones: dict[str, list[str]] = {}
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def zone(self, origin: str, *lines: str) -> None:
        """Replace the zone `origin` with these lines (owners relative to it or absolute)."""
        self.zones[origin.rstrip(".")] = list(lines)
        self.restart()

    def add(self, origin: str, *lines: str) -> None:
        self.zones.setdefault(origin.rstrip("."), []).extend(lines)
        self.restart()

    def _write(self) -> Path:
        conf = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            '  username: ""',
            '  chroot: ""',
            f"  zonesdir: {self.workdir}",
            '  database: ""',
            f"  pidfile: {self.workdir}/nsd.pid",
            f"  xfrdfile: {self.workdir}/xfrd.state",
            f"  zonelistfile: {self.workdir}/zone.list",
            f"  logfile: {self.workdir}/nsd.log",
            "  server-count: 1",
            "  do-ip6: no",
            "  verbosity: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for origin, lines in self.zones.items():
            path = self.workdir / f"{origin}.zone"
            path.write_text(f"$ORIGIN {origin}.\n$TTL 60\n" + SOA.format(origin=origin)
                            + "\n".join(lines) + "\n")
            conf += ["zone:", f"  name: {origin}", f"  zonefile: {path}"]
        conf_path = self.workdir / "nsd.conf"
        conf_path.write_text("\n".join(conf) + "\n")
        return conf_path

    def restart(self) -> None:
        self.stop()
        conf = self._write()
        check = subprocess.run([self.nsd + "-checkconf", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nsd configuration is invalid: {check.stderr}")
        for origin in self.zones:
            zone_check = subprocess.run(
                [self.nsd + "-checkzone", origin, str(self.workdir / f"{origin}.zone")],
                capture_output=True, text=True,
            )
            if zone_check.returncode != 0:
                raise RuntimeError(f"zone {origin} is invalid: {zone_check.stdout}{zone_check.stderr}")
        self.proc = subprocess.Popen([self.nsd, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        probe = dns.message.make_query(next(iter(self.zones), "ready.test"), dns.rdatatype.SOA)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nsd exited: {self.proc.stderr.read().decode()}")
            try:
                dns.query.udp(probe, "127.0.0.1", port=self.port, timeout=0.2)
                return
            except (dns.exception.Timeout, OSError, dns.query.BadResponse, dns.exception.FormError):
                # A server still starting may answer without the question (seen once in CI).
                time.sleep(0.02)
        self.stop()
        raise TimeoutError("nsd did not answer within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def resolver(self) -> dns.resolver.Resolver:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.lifetime = 3
        return res


@pytest.fixture
def dns_server(tmp_path, settings):
    """Start nsd on loopback; DNS_RESOLVERS and dnspython's default resolver point at it."""
    nsd = need_program("nsd")
    workdir = tmp_path / "nsd"
    workdir.mkdir()
    server = LoopbackDns(workdir, nsd)
    server.zones["dns-ready.test"] = []
    server.restart()
    previous = dns.resolver.default_resolver
    dns.resolver.default_resolver = server.resolver()
    settings.DNS_RESOLVERS = [("127.0.0.1", server.port)]
    try:
        yield server
    finally:
        dns.resolver.default_resolver = previous
        server.stop()
