"""Where mail for a domain goes: MX by preference (RFC 5321 section 5.1).

Answers fall in three kinds, and each decides what happens to the recipients:
a list of hosts to try; a permanent "no" (NXDOMAIN, null MX of RFC 7505) that bounces at once;
a temporary failure (SERVFAIL, timeouts) that defers. dnspython keeps them apart
(NXDOMAIN vs NoNameservers/LifetimeTimeout), which is why we use it rather than getaddrinfo.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
from django.conf import settings

from mailhost.resolvers import configured_resolver


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


# One TTL-respecting answer cache per resolver address, kept for the worker process's life: a
# queue run touches the same few destinations over and over, and Postfix leans on a caching
# resolver for the same reason. Keyed by the servers asked so a new DNS_RESOLVERS is never
# answered from another server's cache. SMTP_DNS_CACHE=false turns it off.
_caches: dict[tuple, dns.resolver.LRUCache] = {}


def resolver(cached: bool = False) -> dns.resolver.Resolver:
    """A resolver on settings.DNS_RESOLVERS; `cached` shares the process's answer cache (MX and
    address lookups of the delivery path)."""
    cache = None
    if cached and getattr(settings, "SMTP_DNS_CACHE", True):
        cache = _caches.setdefault(tuple(settings.DNS_RESOLVERS), dns.resolver.LRUCache(10000))
    return configured_resolver(lifetime=10, timeout=4, cache=cache)


def _query(res: dns.resolver.Resolver, name: str, rdtype: str, expiries: list[float] | None = None):
    """The records; `expiries` collects when each positive answer runs out (its TTL)."""
    try:
        answer = res.resolve(name, rdtype, search=False)
        if expiries is not None:
            expiries.append(answer.expiration)
        return list(answer)
    except dns.resolver.NXDOMAIN as exc:
        raise PermanentRoutingError(f"{name}: no such domain (NXDOMAIN)", "5.1.2") from exc
    except dns.resolver.NoAnswer:
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as exc:
        raise TemporaryRoutingError(f"{name} {rdtype}: DNS lookup failed ({exc.__class__.__name__})") from exc


def addresses(res: dns.resolver.Resolver, name: str, expiries: list[float] | None = None) -> tuple[str, ...]:
    """IPv4 first: big receivers refuse IPv6 clients without PTR, and most hosts reach v4."""
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [r.address for r in _query(res, name, rdtype, expiries)]
        except PermanentRoutingError:
            return ()
    return tuple(found)


# The hosts of a domain, remembered until the first of the answers they came from runs out
# (and MX_MEMO_SECONDS at most, for the negative answers whose TTL is not kept): a draining
# worker asks for the same destinations every round, and three lookups through dnspython's
# cache (MX, A, AAAA) still cost ~0.1 ms of parsing names and building answers each time.
# Only complete answers are kept: a failed or partial lookup is asked again next time.
MX_MEMO_SECONDS = 60.0
_memo: dict[tuple, tuple[float, list[list[Host]]]] = {}


def mx_hosts(domain: str) -> list[Host]:
    """The hosts to try for `domain`, best preference first (equal preferences shuffled)."""
    port = settings.SMTP_OUTBOUND_PORT
    if settings.SMTP_RELAY_HOST:
        host, relay_port = settings.SMTP_RELAY_HOST
        return [Host(host, (host,), relay_port)]
    cached = getattr(settings, "SMTP_DNS_CACHE", True)
    key = (domain, tuple(settings.DNS_RESOLVERS), port)
    known = _memo.get(key) if cached else None
    if known is None or known[0] <= time.time():
        expiries: list[float] = []
        groups, complete = _lookup(domain, port, resolver(cached=cached), expiries)
        known = (min([*expiries, time.time() + MX_MEMO_SECONDS]), groups)
        if cached and complete:
            if len(_memo) >= 10000:
                _memo.clear()
            _memo[key] = known
    hosts = [host for group in known[1] for host in random.sample(group, len(group))]
    if not hosts:
        raise TemporaryRoutingError(f"no MX host of {domain} has an address right now")
    return hosts


def forget_hosts() -> None:
    _memo.clear()


def _lookup(domain: str, port: int, res: dns.resolver.Resolver,
            expiries: list[float]) -> tuple[list[list[Host]], bool]:
    """(hosts grouped by preference, best first; whether every lookup answered)."""
    records = _query(res, domain, "MX", expiries)
    if not records:
        # RFC 5321 5.1: no MX but an address record is an implicit MX of preference 0.
        found = addresses(res, domain, expiries)
        if not found:
            raise PermanentRoutingError(f"{domain} has neither MX nor address records", "5.1.2")
        return [[Host(domain, found, port)]], True
    if len(records) == 1 and records[0].exchange == dns.name.root:
        raise PermanentRoutingError(f"{domain} does not accept mail (null MX, RFC 7505)", "5.1.10")
    by_pref: dict[int, list[str]] = {}
    for rec in records:
        if rec.exchange != dns.name.root:
            by_pref.setdefault(rec.preference, []).append(rec.exchange.to_text(omit_final_dot=True))
    groups: list[list[Host]] = []
    complete = True
    for pref in sorted(by_pref):
        group = []
        for name in by_pref[pref]:
            try:
                found = addresses(res, name, expiries)
            except TemporaryRoutingError:
                found, complete = (), False
            if found:
                group.append(Host(name.lower(), found, port))
        if group:
            groups.append(group)
    return groups, complete
