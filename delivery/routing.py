"""Where mail for a domain goes: MX by preference (RFC 5321 section 5.1).

Answers fall in three kinds, and each decides what happens to the recipients:
a list of hosts to try; a permanent "no" (NXDOMAIN, null MX of RFC 7505) that bounces at once;
a temporary failure (SERVFAIL, timeouts) that defers. dnspython keeps them apart
(NXDOMAIN vs NoNameservers/LifetimeTimeout), which is why we use it rather than getaddrinfo.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
from django.conf import settings


class RoutingError(Exception):
    permanent = False


class PermanentRoutingError(RoutingError):
    """The domain does not take mail: bounce now (5.1.2 / 5.1.10)."""

    permanent = True

    def __init__(self, message: str, status: str = "5.1.2"):
        super().__init__(message)
        self.status = status


class TemporaryRoutingError(RoutingError):
    """The answer could not be had right now: defer (4.4.3)."""


@dataclass(frozen=True)
class Host:
    name: str           # the MX target (or the relay host), used for TLS names and MTA-STS
    addresses: tuple[str, ...]
    port: int


def resolver() -> dns.resolver.Resolver:
    """A resolver on settings.DNS_RESOLVERS, or the system's when that is empty."""
    if not settings.DNS_RESOLVERS:
        res = dns.resolver.Resolver()
    else:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [ip for ip, _ in settings.DNS_RESOLVERS]
        res.port = settings.DNS_RESOLVERS[0][1]
    res.lifetime = 10
    res.timeout = 4
    return res


def _query(res: dns.resolver.Resolver, name: str, rdtype: str):
    try:
        return list(res.resolve(name, rdtype, search=False))
    except dns.resolver.NXDOMAIN as exc:
        raise PermanentRoutingError(f"{name}: no such domain (NXDOMAIN)", "5.1.2") from exc
    except dns.resolver.NoAnswer:
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as exc:
        raise TemporaryRoutingError(f"{name} {rdtype}: DNS lookup failed ({exc.__class__.__name__})") from exc


def addresses(res: dns.resolver.Resolver, name: str) -> tuple[str, ...]:
    """IPv4 first: big receivers refuse IPv6 clients without PTR, and most hosts reach v4."""
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [r.address for r in _query(res, name, rdtype)]
        except PermanentRoutingError:
            return ()
    return tuple(found)


def mx_hosts(domain: str) -> list[Host]:
    """The hosts to try for `domain`, best preference first (equal preferences shuffled)."""
    port = settings.SMTP_OUTBOUND_PORT
    if settings.SMTP_RELAY_HOST:
        host, relay_port = settings.SMTP_RELAY_HOST
        return [Host(host, (host,), relay_port)]
    res = resolver()
    records = _query(res, domain, "MX")
    if not records:
        # RFC 5321 5.1: no MX but an address record is an implicit MX of preference 0.
        found = addresses(res, domain)
        if not found:
            raise PermanentRoutingError(f"{domain} has neither MX nor address records", "5.1.2")
        return [Host(domain, found, port)]
    if len(records) == 1 and records[0].exchange == dns.name.root:
        raise PermanentRoutingError(f"{domain} does not accept mail (null MX, RFC 7505)", "5.1.10")
    by_pref: dict[int, list[str]] = {}
    for rec in records:
        if rec.exchange != dns.name.root:
            by_pref.setdefault(rec.preference, []).append(rec.exchange.to_text(omit_final_dot=True))
    hosts: list[Host] = []
    for pref in sorted(by_pref):
        names = by_pref[pref]
        random.shuffle(names)
        for name in names:
            try:
                found = addresses(res, name)
            except TemporaryRoutingError:
                found = ()
            if found:
                hosts.append(Host(name.lower(), found, port))
    if not hosts:
        raise TemporaryRoutingError(f"no MX host of {domain} has an address right now")
    return hosts
