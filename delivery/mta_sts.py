"""MTA-STS (RFC 8461): a domain's promise that its MX hosts speak TLS with valid certificates.

The `_mta-sts.<domain>` TXT record announces a policy id; the policy itself comes over HTTPS from
`https://mta-sts.<domain>/.well-known/mta-sts.txt` (no redirects, 200 only, RFC 8461 3.3) and is
cached in the database until max_age runs out, so every worker shares it. In `enforce` mode a
host that is not listed, offers no STARTTLS or shows a bad certificate is skipped and the mail is
deferred — never sent in plaintext.

Tests (and operators with a private CA) point MTA_STS_CA_FILE at their CA bundle and
MTA_STS_HTTPS_PORT at a local server; the defaults are the system trust store and port 443.
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from . import https_requests, routing
from .models import MtaStsPolicy

log = logging.getLogger(__name__)
MAX_POLICY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
FETCH_SECONDS = 10.0  # connect to last byte
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most one year


@dataclass
class Policy:
    mode: str = "none"                     # enforce | testing | none
    mx: list[str] = field(default_factory=list)
    max_age: int = 0
    policy_id: str = ""
    expires_at: dt.datetime | None = None   # when the cached copy runs out (RFC 8461 max_age)

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    def allows(self, host: str) -> bool:
        """RFC 8461 4.1: exact names, or `*.example.net` for exactly one more label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            pattern = pattern.lower().rstrip(".")
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


class PolicyError(Exception):
    pass


def tls_context(verify: bool) -> ssl.SSLContext:
    """Verified context for MTA-STS (and the policy fetch), or opportunistic for everything else.

    Opportunistic STARTTLS does not check certificates (RFC 7435): refusing a self-signed MX
    would only push the mail to plaintext.
    """
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    cafile = getattr(settings, "MTA_STS_CA_FILE", "") or None
    return ssl.create_default_context(cafile=cafile)


def parse_policy(text: str) -> Policy:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values.setdefault(key.strip(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise PolicyError("policy has no `version: STSv1`")
    mode = (values.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"unknown policy mode {mode!r}")
    try:
        max_age = min(int((values.get("max_age") or [""])[0]), MAX_AGE_LIMIT)
    except ValueError as exc:
        raise PolicyError("policy has no valid max_age") from exc
    mx = values.get("mx", [])
    if mode != "none" and not mx:
        raise PolicyError("policy lists no mx")
    return Policy(mode=mode, mx=mx, max_age=max_age)


def txt_policy_id(domain: str) -> str | None:
    """The id= of `_mta-sts.<domain>` or None when the domain publishes no (valid) record."""
    res = routing.resolver()
    try:
        answers = res.resolve(f"_mta-sts.{domain}", "TXT", search=False)
    except Exception:  # noqa: BLE001 - any DNS failure means "no fresh announcement"; cache decides
        return None
    records = [b"".join(r.strings).decode("ascii", "replace") for r in answers]
    records = [r for r in records if r.startswith("v=STSv1")]
    if len(records) != 1:
        return None
    for part in records[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key == "id" and value:
            return value
    return None


def fetch(domain: str) -> Policy:
    """GET the policy over verified HTTPS, resolving mta-sts.<domain> through our resolver."""
    host = f"mta-sts.{domain}"
    port = getattr(settings, "MTA_STS_HTTPS_PORT", 443)
    res = routing.resolver()
    try:
        addrs = routing.addresses(res, host)
    except routing.RoutingError as exc:
        raise PolicyError(str(exc)) from exc
    if not addrs:
        raise PolicyError(f"{host} has no address")
    request = (f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
               f"Connection: close\r\nUser-Agent: mailhost\r\n\r\n").encode()
    limit = MAX_POLICY_BYTES + MAX_HEADER_BYTES
    try:
        # The whole fetch has one deadline: it runs on the delivery path of a worker.
        answer = https_requests.exchange(host, addrs[0], port, request, tls_context(verify=True),
                                         seconds=FETCH_SECONDS, limit=limit + 1)
        if len(answer) > limit:
            raise PolicyError("policy is larger than 64 KiB")
        response = https_requests.parse(answer)
        if response.status != 200:
            raise PolicyError(f"policy fetch answered HTTP {response.status}")
        ctype = (response.getheader("Content-Type") or "").split(";")[0].strip()
        if ctype != "text/plain":
            raise PolicyError(f"policy has content type {ctype!r}, not text/plain")
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise PolicyError(f"policy fetch from {host} failed: {exc}") from exc
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError("policy is larger than 64 KiB")
    return parse_policy(body.decode("utf-8", "replace"))


def _from_row(row: MtaStsPolicy) -> Policy:
    return Policy(mode=row.mode, mx=list(row.mx), max_age=row.max_age, policy_id=row.policy_id,
                  expires_at=row.expires_at)


def policy_for(domain: str) -> Policy:
    """The policy in force for `domain` (mode `none` when it has none), refreshed per RFC 8461 5."""
    now = timezone.now()
    cached = MtaStsPolicy.objects.filter(domain=domain, expires_at__gt=now).first()
    policy_id = txt_policy_id(domain)
    if policy_id is None:
        return _from_row(cached) if cached else Policy()
    if cached and cached.policy_id == policy_id:
        return _from_row(cached)
    try:
        policy = fetch(domain)
    except PolicyError as exc:
        log.warning("MTA-STS policy of %s: %s", domain, exc)
        return _from_row(cached) if cached else Policy()
    policy.policy_id = policy_id
    policy.expires_at = now + dt.timedelta(seconds=policy.max_age)
    MtaStsPolicy.objects.update_or_create(domain=domain, defaults={
        "policy_id": policy_id, "mode": policy.mode, "mx": policy.mx, "max_age": policy.max_age,
        "fetched_at": now, "expires_at": policy.expires_at,
    })
    return policy


# RFC 8461 5.1 lets a sender apply a cached policy that has not outlived max_age without asking
# DNS for a new id ("optionally, sending MTAs may unconditionally check for a new policy"), and
# deliver to a domain with no cached policy while discovery goes on. So the delivery path asks
# `policy_for` (a TXT lookup plus a database read) at most once per domain every
# MTA_STS_RECHECK_SECONDS in each worker process, and never past the policy's own expiry; a new
# policy id, or a newly published policy, is seen within that time.
_recent: dict[str, tuple[float, Policy]] = {}
_recent_lock = threading.Lock()


def policy_for_delivery(domain: str) -> Policy:
    """`policy_for`, remembered briefly per worker process (see above)."""
    seconds = float(getattr(settings, "MTA_STS_RECHECK_SECONDS", 60))
    now = time.monotonic()
    known = _recent.get(domain)
    if known is not None and known[0] > now:
        return known[1]
    policy = policy_for(domain)
    if seconds > 0:
        if policy.expires_at is not None:
            seconds = min(seconds, (policy.expires_at - timezone.now()).total_seconds())
        with _recent_lock:
            if len(_recent) >= 10000:
                _recent.clear()
            _recent[domain] = (now + seconds, policy)
    return policy


def forget_recent() -> None:
    with _recent_lock:
        _recent.clear()
