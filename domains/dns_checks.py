"""Live DNS checks for a hosted domain: what the wizard, `dnscheck` and the periodic re-check show.

Expected values come from `records.expected_records` (the one source of truth). Names inside the
domain's zone are asked from the zone's authoritative servers when they can be found, because
caching resolvers hand out stale "missing record" answers for minutes to hours after the owner
publishes (Modoboa #1647, #3263; mailcow #2292). Everything else (the mail host, PTR, SPF
includes, Spamhaus) goes through `DNS_RESOLVERS`: Spamhaus refuses public resolvers.

The checks run in threads under one time bound (`DNS_CHECK_TIMEOUT`) and touch no database row:
everything they need is read first, so a slow name server never holds a connection open.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass

import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename
import spf
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailhost.resolvers import configured_resolver

from .models import DnsCheck, Domain
from .mta_sts import POLICY_PATH, policy_text
from .records import Record, expected_records, public_ips

log = logging.getLogger(__name__)
# pyspf 2.0.14 still calls the deprecated dns.resolver.query(); the behaviour is the same.
warnings.filterwarnings("ignore", message="please use dns.resolver.resolve", category=DeprecationWarning, module="spf")

OK, WARNING, ERROR, PENDING = "ok", "warning", "error", "pending"
SPAMHAUS_ZEN = "zen.spamhaus.org"
SPAMHAUS_DBL = "dbl.spamhaus.org"
# An address no sane SPF record authorises: evaluating it walks the whole record, so the lookup
# limits (RFC 7208 4.6.4) are enforced even when our own address matches early.
SPF_PROBE_IP = "192.0.2.255"
MTA_STS_MAX_BYTES = 64 * 1024


@dataclass
class CheckResult:
    check: str
    status: str  # ok | warning | error | pending
    found: str
    expected: str
    hint: str = ""
    required: bool = False

    def as_json(self) -> dict:
        """The contract's JSON shape for `dnscheck --json`."""
        data = asdict(self)
        del data["required"]
        return data


class LookupFailed(Exception):
    """SERVFAIL, REFUSED or a timeout: the answer is unknown, which is not the same as missing."""


# --- DNS access ------------------------------------------------------------------------------

class Lookup:
    """Answers for one check run: zone names from the authoritative servers, the rest recursively."""

    def __init__(self, zone_name: str, lifetime: float):
        self.recursive = configured_resolver(lifetime=lifetime)
        self.authoritative = self._find_authoritative(zone_name, lifetime)
        self.source = "authoritative servers" if self.authoritative else "configured resolvers"

    def _find_authoritative(self, name: str, lifetime: float) -> dns.resolver.Resolver | None:
        try:
            zone = dns.resolver.zone_for_name(name, resolver=self.recursive, lifetime=lifetime)
            servers = [r.target for r in self.recursive.resolve(zone, "NS")]
        except dns.exception.DNSException:
            return None
        addresses = []
        for server in servers:
            for rtype in ("A", "AAAA"):
                try:
                    addresses += [r.address for r in self.recursive.resolve(server, rtype)]
                except dns.exception.DNSException:
                    continue
        if not addresses:
            return None
        res = dns.resolver.Resolver(configure=False)
        port = settings.DNS_AUTHORITATIVE_PORT
        res.nameservers = [dns.nameserver.Do53Nameserver(a, port) for a in sorted(set(addresses))]
        res.cache = None
        # Short, so an unreachable authoritative server (port 53 filtered) still leaves time to
        # fall back to the configured resolvers within the run's bound.
        res.lifetime = min(3.0, lifetime / 3)
        res.timeout = min(1.0, res.lifetime)
        return res

    def answer(self, name: str, rtype: str, *, zone: bool = True) -> dns.resolver.Answer | None:
        """The answer (None for NXDOMAIN); the authoritative servers first for names in the zone."""
        resolvers = [self.authoritative, self.recursive] if zone and self.authoritative else [self.recursive]
        failure: Exception | None = None
        for res in resolvers:
            try:
                return res.resolve(name, rtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                return None
            except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as exc:
                failure = exc
        raise LookupFailed(f"{name} {rtype}: {failure}")

    def records(self, name: str, rtype: str, *, zone: bool = True) -> list:
        answer = self.answer(name, rtype, zone=zone)
        return list(answer.rrset) if answer is not None and answer.rrset is not None else []

    def txt(self, name: str, *, zone: bool = True) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.records(name, "TXT", zone=zone)]

    def addresses(self, name: str) -> tuple[list[str], str | None]:
        """A and AAAA of `name` (recursively), and the CNAME target when `name` is an alias."""
        found, alias = [], None
        for rtype in ("A", "AAAA"):
            answer = self.answer(name, rtype, zone=False)
            if answer is None:
                continue
            if answer.canonical_name != dns.name.from_text(name):
                alias = answer.canonical_name.to_text(omit_final_dot=True)
            found += [r.address for r in answer.rrset or []]
        return found, alias


def dns_name(name: dns.name.Name) -> str:
    """Lower case, no trailing dot; the root (a null MX or SRV target) becomes ""."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def tags(value: str) -> dict[str, str]:
    """Tag=value lists of DKIM, DMARC, MTA-STS and TLS-RPT records (RFC 6376 3.2)."""
    out = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            out[key.strip().lower()] = val.strip()
    return out


# --- the checks ------------------------------------------------------------------------------

@dataclass
class Context:
    name: str
    host: str
    ips: list[str]
    expected: dict[str, Record]
    token_verified: bool
    lookup: Lookup
    timeout: float


def _result(ctx: Context, key: str, status: str, found: str, hint: str = "", expected: str | None = None):
    record = ctx.expected.get(key)
    if expected is None:
        expected = f"{record.owner} {record.type} {record.value}" if record else ""
    required = key.split(":")[0] in REQUIRED and (record is None or record.required)
    return CheckResult(key, status, found, expected, "" if status == OK else hint, required)


def _publish(ctx: Context, key: str) -> str:
    record = ctx.expected[key]
    return f"Publish {record.owner} {record.type} {record.value}"


def check_mx(ctx: Context) -> CheckResult:
    rdatas = ctx.lookup.records(ctx.name, "MX")
    targets = sorted((r.preference, dns_name(r.exchange)) for r in rdatas)
    found = ", ".join(f"{p} {t or '.'}" for p, t in targets) or "(no MX record)"
    fix = _publish(ctx, "mx") + " and remove any other MX record."
    if not targets:
        return _result(ctx, "mx", ERROR, found, fix)
    if targets == [(0, "")]:
        return _result(ctx, "mx", ERROR, found + " (null MX: the domain refuses all mail)", fix)
    if ctx.host not in [t for _, t in targets]:
        return _result(ctx, "mx", ERROR, found, fix + f" Mail sent to the domain does not reach {ctx.host}.")
    for _, target in targets:
        try:
            _, alias = ctx.lookup.addresses(target)
        except LookupFailed:
            continue
        if alias:
            return _result(ctx, "mx", ERROR, f"{found} ({target} is a CNAME to {alias})",
                           "An MX must name a host with A/AAAA records, never a CNAME (RFC 2181 10.3, "
                           f"RFC 5321 5.1). {fix}")
    others = [t for _, t in targets if t != ctx.host]
    if others:
        return _result(ctx, "mx", WARNING, found,
                       f"Mail delivered to {', '.join(others)} never reaches the mailboxes here: {fix}")
    return _result(ctx, "mx", OK, found)


def check_mx_host(ctx: Context) -> CheckResult:
    expected = ", ".join(f"{'AAAA' if ':' in ip else 'A'} {ip}" for ip in ctx.ips) or "(MAIL_PUBLIC_IPS unknown)"
    found_ips, alias = ctx.lookup.addresses(ctx.host)
    found = ", ".join(found_ips) or "(no A/AAAA record)"
    expected = f"{ctx.host} {expected}"
    if alias:
        return _result(ctx, "mx-host", ERROR, f"{found} via CNAME {alias}",
                       f"Replace the CNAME at {ctx.host} with A/AAAA records for {', '.join(ctx.ips)}.", expected)
    strangers = sorted(set(found_ips) - set(ctx.ips))
    if not found_ips or strangers or not set(found_ips) & set(ctx.ips):
        return _result(ctx, "mx-host", ERROR, found,
                       f"Give {ctx.host} exactly the addresses {', '.join(ctx.ips)}"
                       + (f"; {', '.join(strangers)} is not this server" if strangers else "") + ".", expected)
    return _result(ctx, "mx-host", OK, found, expected=expected)


def _spf_all(record: str) -> str | None:
    terms = record.split()[1:]
    for term in terms:
        if re.fullmatch(r"[-~+?]?all", term, re.I):
            return term if term[0] in "-~+?" else "+" + term
    return "redirect" if any(t.lower().startswith("redirect=") for t in terms) else None


def _spf_eval(ctx: Context, record: str, ip: str) -> tuple[str, str]:
    """pyspf's verdict for mail from `ip`; a fresh query object each time, so nothing is cached."""
    query = spf.query(i=ip, s=f"postmaster@{ctx.name}", h=ctx.host, querytime=ctx.timeout)
    result, _code, explanation = query.check(spf=record)
    return result, explanation


def check_spf(ctx: Context) -> CheckResult:
    records = [t for t in ctx.lookup.txt(ctx.name) if re.match(r"v=spf1(\s|$)", t, re.I)]
    fix = _publish(ctx, "spf")
    if not records:
        return _result(ctx, "spf", ERROR, "(no SPF record)", fix)
    found = " | ".join(records)
    if len(records) > 1:
        return _result(ctx, "spf", ERROR, found,
                       f"{len(records)} SPF records: receivers treat that as a permanent error (RFC 7208 3.2). "
                       f"Merge them into one: {ctx.expected['spf'].value}")
    record = records[0]
    ending = _spf_all(record)
    if ending in ("+all", "?all"):
        return _result(ctx, "spf", ERROR, found,
                       f"'{ending}' lets anyone send as {ctx.name}: end the record with -all (or ~all). {fix}")
    if ending is None:
        return _result(ctx, "spf", ERROR, found, f"The record does not end in -all or ~all. {fix}")
    if not ctx.ips:
        return _result(ctx, "spf", ERROR, found, "This server's public addresses are unknown (MAIL_HOSTNAME does "
                       "not resolve): set MAIL_PUBLIC_IPS so the record can be checked against them.")
    result, explanation = _spf_eval(ctx, record, SPF_PROBE_IP)
    if result == "temperror":
        return _result(ctx, "spf", ERROR, f"{found} (temperror: {explanation})",
                       "A DNS lookup the record needs (an include, a, mx) failed: check again in a moment.")
    if result == "permerror":
        return _result(ctx, "spf", ERROR, f"{found} (permerror: {explanation})",
                       "Receivers cannot evaluate the record: only valid mechanisms, at most 10 DNS-querying "
                       f"terms (include, a, mx, ptr, exists, redirect) and 2 void lookups (RFC 7208 4.6.4). {fix}")
    for ip in ctx.ips:
        result, _ = _spf_eval(ctx, record, ip)
        if result != "pass":
            return _result(ctx, "spf", ERROR, f"{found} ({ip}: {result})",
                           f"The record does not authorise this server's address {ip}. {fix}")
    return _result(ctx, "spf", OK, found)


def check_dkim(ctx: Context, key: str) -> CheckResult:
    record = ctx.expected[key]
    want = tags(record.value)
    published = [t for t in ctx.lookup.txt(record.owner) if "p=" in t]
    missing_status = ERROR if record.required else PENDING
    fix = _publish(ctx, key)
    if not published:
        return _result(ctx, key, missing_status, "(no DKIM record)", fix)
    found = " | ".join(published)
    if len(published) > 1:
        return _result(ctx, key, ERROR, found, f"Keep exactly one DKIM record at {record.owner}. {fix}")
    got = tags(published[0])
    got_key = re.sub(r"\s+", "", got.get("p", ""))
    if got_key != want["p"]:
        problem = "is empty (the key is revoked)" if not got_key else "differs from this server's key"
        return _result(ctx, key, missing_status if not record.required and not got_key else ERROR, found,
                       f"The public key {problem}: receivers will reject the signatures. {fix}")
    if got.get("k", "rsa").lower() != want["k"]:
        return _result(ctx, key, ERROR, found, f"The key type is k={got.get('k')}, not k={want['k']}. {fix}")
    return _result(ctx, key, OK, found)


def check_dmarc(ctx: Context) -> CheckResult:
    owner = f"_dmarc.{ctx.name}"
    records = [t for t in ctx.lookup.txt(owner) if re.match(r"v\s*=\s*DMARC1\s*(;|$)", t, re.I)]
    fix = _publish(ctx, "dmarc")
    if not records:
        return _result(ctx, "dmarc", ERROR, "(no DMARC record)", fix)
    found = " | ".join(records)
    if len(records) > 1:
        return _result(ctx, "dmarc", ERROR, found,
                       f"{len(records)} DMARC records mean no policy at all (RFC 7489 6.6.3). Keep one: "
                       + ctx.expected["dmarc"].value)
    policy = tags(records[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return _result(ctx, "dmarc", ERROR, found, f"The record has no valid p= policy. {fix}")
    if policy == "none":
        return _result(ctx, "dmarc", WARNING, found,
                       "p=none only monitors: once reports look clean, move to p=quarantine or p=reject.")
    return _result(ctx, "dmarc", OK, found)


def check_ownership(ctx: Context) -> CheckResult:
    record = ctx.expected["ownership"]
    values = ctx.lookup.txt(record.owner)
    found = " | ".join(values) or "(no TXT record)"
    if record.value in values:
        return _result(ctx, "ownership", OK, found)
    if ctx.token_verified:
        return _result(ctx, "ownership", OK, found + " (ownership was verified earlier)")
    return _result(ctx, "ownership", WARNING, found,
                   f"{_publish(ctx, 'ownership')}, then press verify: the domain may not send until it is proven.")


def _single_tagged(ctx: Context, key: str, version: str, needed: str) -> CheckResult:
    record = ctx.expected[key]
    values = [t for t in ctx.lookup.txt(record.owner) if t.replace(" ", "").lower().startswith(f"v={version}".lower())]
    found = " | ".join(values) or "(no record)"
    fix = _publish(ctx, key)
    if len(values) != 1:
        return _result(ctx, key, WARNING, found, fix if not values else f"Keep exactly one record. {fix}")
    if not tags(values[0]).get(needed):
        return _result(ctx, key, WARNING, found, f"The record lacks {needed}=. {fix}")
    return _result(ctx, key, OK, found)


def check_mta_sts(ctx: Context) -> CheckResult:
    result = _single_tagged(ctx, "mta-sts", "STSv1", "id")
    if result.status == OK and not re.fullmatch(r"[A-Za-z0-9]{1,32}", tags(result.found)["id"]):
        return _result(ctx, "mta-sts", WARNING, result.found, "id= must be 1-32 letters or digits (RFC 8461 3.1).")
    return result


def check_tls_rpt(ctx: Context) -> CheckResult:
    return _single_tagged(ctx, "tls-rpt", "TLSRPTv1", "rua")


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address we resolved ourselves (through DNS_RESOLVERS), verified for the name."""

    def __init__(self, name: str, address: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(name, port, context=context, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_mta_sts_policy(domain: str, lookup: Lookup, timeout: float) -> str:
    """The policy file, fetched as RFC 8461 3.3 says: HTTPS, valid certificate, 200, no redirects."""
    host = f"mta-sts.{domain}"
    addresses, _ = lookup.addresses(host)
    if not addresses:
        raise ValueError(f"{host} has no A/AAAA record")
    context = ssl.create_default_context(cafile=settings.MTA_STS_CA_FILE or None)
    conn = _PinnedHTTPSConnection(host, addresses[0], settings.MTA_STS_HTTPS_PORT, context, timeout)
    try:
        conn.request("GET", POLICY_PATH, headers={"User-Agent": "mailhost-dnscheck"})
        response = conn.getresponse()
        if response.status != 200:
            raise ValueError(f"HTTP {response.status} (only 200 counts; redirects are not followed)")
        if not (response.getheader("Content-Type") or "").startswith("text/plain"):
            raise ValueError(f"Content-Type {response.getheader('Content-Type')!r} is not text/plain")
        body = response.read(MTA_STS_MAX_BYTES + 1)
    finally:
        conn.close()
    if len(body) > MTA_STS_MAX_BYTES:
        raise ValueError("the policy is larger than 64 KiB")
    return body.decode("utf-8", "replace")


def _mx_pattern_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def check_mta_sts_policy(ctx: Context) -> CheckResult:
    expected = f"https://mta-sts.{ctx.name}{POLICY_PATH}: " + "; ".join(policy_text().splitlines())
    fix = (f"Point mta-sts.{ctx.name} at {ctx.host} (CNAME) with a certificate valid for that name; "
           f"{ctx.host} serves the policy.")
    try:
        text = fetch_mta_sts_policy(ctx.name, ctx.lookup, ctx.timeout)
    except (OSError, ValueError, http.client.HTTPException, LookupFailed) as exc:
        return _result(ctx, "mta-sts-policy", WARNING, f"(cannot fetch: {exc})", fix, expected)
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    found = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    mode = fields.get("mode", [""])[0]
    problems = []
    if fields.get("version") != ["STSv1"]:
        problems.append("version must be STSv1")
    if mode != "enforce":
        problems.append(f"mode is {mode or 'missing'}, not enforce")
    if not any(_mx_pattern_matches(p.lower(), ctx.host) for p in fields.get("mx", [])):
        problems.append(f"no mx: line matches {ctx.host}")
    if not fields.get("max_age", [""])[0].isdigit():
        problems.append("max_age is missing")
    if problems:
        return _result(ctx, "mta-sts-policy", WARNING, found, "; ".join(problems) + ". " + fix, expected)
    return _result(ctx, "mta-sts-policy", OK, found, expected=expected)


def check_srv(ctx: Context, key: str) -> CheckResult:
    record = ctx.expected[key]
    port = int(record.value.split()[2])
    rdatas = ctx.lookup.records(record.owner, "SRV")
    found = ", ".join(f"{r.priority} {r.weight} {r.port} {dns_name(r.target) or '.'}" for r in rdatas)
    if any(dns_name(r.target) == ctx.host and r.port == port for r in rdatas):
        return _result(ctx, key, OK, found)
    return _result(ctx, key, WARNING, found or "(no SRV record)",
                   f"{_publish(ctx, key)} so mail clients find the server by themselves (RFC 6186, RFC 8314).")


def check_client_config(ctx: Context, key: str) -> CheckResult:
    record = ctx.expected[key]
    cnames = [dns_name(r.target) for r in ctx.lookup.records(record.owner, "CNAME")]
    if cnames:
        found = "CNAME " + ", ".join(cnames)
        ok = cnames == [ctx.host]
    else:
        addresses, _ = ctx.lookup.addresses(record.owner)
        found = ", ".join(addresses)
        ok = bool(addresses) and set(addresses) <= set(ctx.ips)
    if ok:
        return _result(ctx, key, OK, found)
    return _result(ctx, key, WARNING, found or "(no record)",
                   f"{_publish(ctx, key)} so Thunderbird and Outlook set themselves up.")


def check_ptr(ctx: Context) -> CheckResult:
    found, problems = [], []
    for ip in ctx.ips:
        names = [dns_name(r.target) for r in ctx.lookup.records(dns.reversename.from_address(ip), "PTR", zone=False)]
        found.append(f"{ip} -> {', '.join(names) or '(no PTR)'}")
        if names != [ctx.host]:
            problems.append(f"ask whoever runs {ip} (the hosting provider) to set its PTR to {ctx.host}")
            continue
        forward, _ = ctx.lookup.addresses(ctx.host)
        if ip not in forward:
            problems.append(f"{ctx.host} does not resolve back to {ip}")
    expected = ", ".join(f"{ip} -> {ctx.host}" for ip in ctx.ips)
    if problems or not ctx.ips:
        hint = "; ".join(problems) or "MAIL_PUBLIC_IPS is unknown"
        return _result(ctx, "ptr", WARNING, "; ".join(found) or "(no address)",
                       hint + ". Big providers refuse mail from addresses without matching reverse DNS.", expected)
    return _result(ctx, "ptr", OK, "; ".join(found), expected=expected)


def _dnsbl(ctx: Context, query: str) -> list[str]:
    return [r.address for r in ctx.lookup.records(query, "A", zone=False)]


def _dnsbl_verdict(ctx: Context, key: str, items: list[tuple[str, list[str]]], zone: str) -> CheckResult:
    """Spamhaus answers 127.255.255.x for refused queries (public resolver, rate limit, bad query):
    that is "unknown", never "listed" (Mail-in-a-Box #2184)."""
    expected = f"not listed on {zone}"
    listed = [(item, codes) for item, codes in items if any(not c.startswith("127.255.255.") for c in codes)]
    unknown = [(item, codes) for item, codes in items if codes and all(c.startswith("127.255.255.") for c in codes)]
    found = "; ".join(f"{item}: {', '.join(codes) or 'not listed'}" for item, codes in items) or "(nothing to check)"
    if listed:
        return _result(ctx, key, WARNING, found,
                       f"{', '.join(i for i, _ in listed)} is listed on {zone}: look it up at "
                       "https://check.spamhaus.org/ and follow the removal steps.", expected)
    if unknown:
        return _result(ctx, key, WARNING, found + " (unknown: Spamhaus refused the query)",
                       f"Spamhaus answered with an error code, so the listing is unknown: query {zone} through "
                       "your own recursive resolver (DNS_RESOLVERS), not a public one.", expected)
    return _result(ctx, key, OK, found, expected=expected)


def check_spamhaus_ip(ctx: Context) -> CheckResult:
    items = []
    for ip in ctx.ips:
        reverse = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        reverse = reverse.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
        items.append((ip, _dnsbl(ctx, f"{reverse}.{SPAMHAUS_ZEN}")))
    return _dnsbl_verdict(ctx, "spamhaus-ip", items, SPAMHAUS_ZEN)


def check_spamhaus_domain(ctx: Context) -> CheckResult:
    return _dnsbl_verdict(ctx, "spamhaus-domain", [(ctx.name, _dnsbl(ctx, f"{ctx.name}.{SPAMHAUS_DBL}"))], SPAMHAUS_DBL)


def check_dnssec(ctx: Context) -> CheckResult:
    """Information only: signed zones let peers use DANE; nobody refuses mail for lacking it."""
    keys = ctx.lookup.records(ctx.name, "DNSKEY")
    # A validating resolver sets AD when asked with DO (RFC 4035 3.2.3, RFC 6840 5.7).
    resolver = configured_resolver(lifetime=ctx.timeout)
    resolver.use_edns(0, dns.flags.DO, 1232)
    resolver.flags = dns.flags.RD | dns.flags.AD
    try:
        validated = bool(resolver.resolve(ctx.name, "SOA").response.flags & dns.flags.AD)
    except dns.exception.DNSException:
        validated = False
    expected = "signed zone (DNSKEY published, validated)"
    if not keys:
        return _result(ctx, "dnssec", WARNING, "unsigned (no DNSKEY)",
                       "Optional: turn on DNSSEC signing at your DNS host.", expected)
    found = f"signed ({len(keys)} DNSKEY), " + ("validated by the resolver" if validated else "not validated")
    return _result(ctx, "dnssec", OK, found, expected=expected)


REQUIRED = ("mx", "mx-host", "spf", "dkim", "dmarc")
# Expected records that have no check of their own: another check covers them.
COVERED_BY = {"mta-sts-host": "mta-sts-policy", "host-a": "mx-host", "host-aaaa": "mx-host"}


def _jobs(ctx: Context) -> list[tuple[str, Callable[[], CheckResult]]]:
    jobs: list[tuple[str, Callable[[], CheckResult]]] = [("mx", lambda: check_mx(ctx)),
                                                         ("mx-host", lambda: check_mx_host(ctx)),
                                                         ("spf", lambda: check_spf(ctx))]
    for key in ctx.expected:
        if key.startswith("dkim:"):
            jobs.append((key, lambda key=key: check_dkim(ctx, key)))
    if not any(k.startswith("dkim:") for k in ctx.expected):
        jobs.append(("dkim", lambda: CheckResult("dkim", ERROR, "(no DKIM key on this server)", "a DKIM key",
                                                 "Generate a DKIM key for the domain, then publish it.", True)))
    jobs += [("dmarc", lambda: check_dmarc(ctx)), ("ownership", lambda: check_ownership(ctx)),
             ("mta-sts", lambda: check_mta_sts(ctx)), ("mta-sts-policy", lambda: check_mta_sts_policy(ctx)),
             ("tls-rpt", lambda: check_tls_rpt(ctx))]
    for key in ctx.expected:
        if key.startswith("srv-"):
            jobs.append((key, lambda key=key: check_srv(ctx, key)))
    jobs += [("autoconfig", lambda: check_client_config(ctx, "autoconfig")),
             ("autodiscover", lambda: check_client_config(ctx, "autodiscover")),
             ("ptr", lambda: check_ptr(ctx)), ("spamhaus-ip", lambda: check_spamhaus_ip(ctx)),
             ("spamhaus-domain", lambda: check_spamhaus_domain(ctx)), ("dnssec", lambda: check_dnssec(ctx))]
    return jobs


def _guarded(ctx: Context, key: str, job: Callable[[], CheckResult]) -> CheckResult:
    try:
        return job()
    except (LookupFailed, dns.exception.DNSException) as exc:
        failure = f"(lookup failed: {exc})"
    except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others' verdicts
        log.exception("DNS check %s for %s failed", key, ctx.name)
        failure = f"(check failed: {exc})"
    result = _result(ctx, key, ERROR, failure, "The DNS servers did not answer: make sure the zone is served, "
                     "then check again.")
    result.status = ERROR if result.required else WARNING
    return result


def run_checks(domain: Domain, only: tuple[str, ...] | None = None) -> list[CheckResult]:
    """Every check for `domain`, in a stable order, within DNS_CHECK_TIMEOUT seconds in total."""
    timeout = float(settings.DNS_CHECK_TIMEOUT)
    started = time.monotonic()
    ips = public_ips()
    expected = {r.key: r for r in expected_records(domain, ips)}
    ctx = Context(domain.name, settings.MAIL_HOSTNAME.rstrip(".").lower(), ips, expected,
                  domain.ownership_verified_at is not None, Lookup(domain.name, timeout), timeout)
    jobs = [(key, job) for key, job in _jobs(ctx) if only is None or key in only]
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dnscheck")
    futures = [pool.submit(_guarded, ctx, key, job) for key, job in jobs]
    wait(futures, timeout=max(0.1, timeout - (time.monotonic() - started)))
    pool.shutdown(wait=False, cancel_futures=True)
    results = []
    for (key, _), future in zip(jobs, futures, strict=True):
        if future.done() and not future.cancelled():
            results.append(future.result())
        else:
            late = _result(ctx, key, ERROR, f"(no answer within {timeout:g} s)", "The DNS servers are slow or "
                           "unreachable: check again in a moment.")
            late.status = ERROR if late.required else WARNING
            results.append(late)
    return results


def required_ok(results: list[CheckResult]) -> bool:
    """The contract's exit status: warnings on recommended records never count."""
    return all(r.status != ERROR for r in results if r.required)


def record_checks(domain: Domain, results: list[CheckResult] | None = None, *,
                  partial: bool = False) -> list[DnsCheck]:
    """Run (or take) the checks and store them: one row per check, flagged when the verdict changed.

    A full run also drops rows of checks that no longer exist (a retired DKIM selector); a partial
    run (the ownership "verify" button) only updates its own rows.
    """
    results = run_checks(domain) if results is None else results
    now = timezone.now()
    rows = []
    with transaction.atomic():
        # Lock the domain row: "check now" and the periodic run may store the same domain at once,
        # and both would insert the first rows of a (domain, check) pair.
        Domain.objects.select_for_update().filter(pk=domain.pk).first()
        previous = {row.key: row for row in DnsCheck.objects.filter(domain=domain)}
        for result in results:
            row = previous.pop(result.check, None) or DnsCheck(domain=domain, key=result.check)
            changed = row.pk is not None and (row.status, row.found) != (result.status, result.found)
            if changed:
                row.previous_status, row.previous_found, row.changed_at = row.status, row.found, now
            row.changed = changed
            row.status, row.found, row.expected = result.status, result.found, result.expected
            row.hint, row.required, row.checked_at = result.hint, result.required, now
            row.save()
            rows.append(row)
        if not partial:
            DnsCheck.objects.filter(pk__in=[row.pk for row in previous.values()]).delete()
        ownership = next((r for r in results if r.check == "ownership"), None)
        if ownership and ownership.status == OK and domain.ownership_verified_at is None:
            domain.ownership_verified_at = now
            domain.save(update_fields=["ownership_verified_at"])
    return rows


def verify_ownership(domain: Domain) -> CheckResult:
    """The wizard's "verify" button: only the token check, stored like any other run."""
    results = run_checks(domain, only=("ownership",))
    record_checks(domain, results, partial=True)
    return results[0]
