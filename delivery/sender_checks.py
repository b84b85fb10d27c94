"""Inbound sender authentication: SPF (pyspf), DKIM (dkimpy, every signature), DMARC (ours).

The results go into an Authentication-Results header (RFC 8601). Only a DMARC failure under
p=reject refuses mail (550 5.7.1); DNS trouble never does: a lookup that times out or gets
SERVFAIL is `temperror`, and DMARC is not evaluated to `fail` on top of a temperror.

dkimpy's `dkim.verify` checks only the first signature and turns DNS errors into a plain
failure (FIELD-NOTES), so we walk every signature with a `dnsfunc` that raises on temporary
errors. DMARC alignment needs the organisational domain; publicsuffixlist ships the Public
Suffix List, so no network access is needed for it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import dkim
import dns.exception
import dns.resolver
import spf
from django.conf import settings
from publicsuffixlist import PublicSuffixList

from mailhost.resolvers import install_default

from . import smtp_policy
from .short_cache import ShortCache

log = logging.getLogger("mailhost.smtp.checks")
DNS_TIMEOUT = 5.0
# SPF verdicts per (client, HELO, sender) and DMARC records per domain are reused this long
# when SMTP_DNS_CACHE is on: a busy MX sees the same senders from the same hosts many times a
# second, and re-evaluating each from dnspython's cache was a tenth of the service's CPU. Far
# below any real record's TTL; failures (temperror) are never reused.
VERDICT_SECONDS = 5.0
_psl = PublicSuffixList()
_verdicts = ShortCache(VERDICT_SECONDS, max_entries=20000)


class DnsTemporaryError(Exception):
    """A lookup that may succeed later (timeout, SERVFAIL): the result is temperror."""


@dataclass
class DkimResult:
    result: str          # pass / fail / neutral / temperror / permerror
    domain: str = ""
    selector: str = ""


@dataclass
class SenderChecks:
    spf: str = "none"
    spf_domain: str = ""
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: str = "none"
    dmarc_policy: str = ""
    from_domain: str = ""

    @property
    def reject(self) -> bool:
        return self.dmarc == "fail" and self.dmarc_policy == "reject"

    def header(self, authserv_id: str) -> bytes:
        parts = [f"spf={self.spf} smtp.mailfrom={self.spf_domain or 'unknown'}"]
        if not self.dkim:
            parts.append("dkim=none")
        for sig in self.dkim:
            parts.append(f"dkim={sig.result} header.d={sig.domain or 'unknown'} header.s={sig.selector or 'unknown'}")
        policy = f" policy.dmarc={self.dmarc_policy}" if self.dmarc_policy else ""
        parts.append(f"dmarc={self.dmarc}{policy} header.from={self.from_domain or 'unknown'}")
        text = f"Authentication-Results: {authserv_id};\r\n\t" + ";\r\n\t".join(parts) + "\r\n"
        return text.encode("ascii", errors="replace")


def use_configured_resolvers() -> None:
    """Point dnspython's default resolver (which pyspf and dkimpy use too) at DNS_RESOLVERS, with
    a TTL-respecting cache: dnspython has none by default, and a busy MX asks the same SPF and
    DMARC questions for every message from one sender."""
    install_default(lifetime=DNS_TIMEOUT, cache=dns.resolver.LRUCache(50000) if settings.SMTP_DNS_CACHE else None)


def check_sender(client_ip: str, helo: str, mail_from: str, data: bytes) -> SenderChecks:
    checks = SenderChecks()
    checks.spf, checks.spf_domain = check_spf(client_ip, helo, mail_from)
    checks.dkim = check_dkim(data)
    checks.from_domain = from_domain(data)
    checks.dmarc, checks.dmarc_policy = check_dmarc(checks)
    return checks


# -- SPF -----------------------------------------------------------------------------------------

def check_spf(client_ip: str, helo: str, mail_from: str) -> tuple[str, str]:
    """RFC 7208 check of MAIL FROM (or of the HELO name for the null sender)."""
    sender = mail_from if not smtp_policy.is_null_sender(mail_from) else f"postmaster@{helo}"
    domain = sender.rpartition("@")[2].lower()
    key = ("spf", client_ip, helo, sender)
    result = _verdicts.get(key) if settings.SMTP_DNS_CACHE else None
    if result is None:
        try:
            result = _token(spf.check2(i=client_ip, s=sender, h=helo, timeout=DNS_TIMEOUT,
                                       querytime=DNS_TIMEOUT)[0])
        except Exception:   # pyspf raises on some malformed input; that is not the sender's pass
            log.exception("spf check failed for %s", sender)
            result = "temperror"
        if result != "temperror" and settings.SMTP_DNS_CACHE:
            _verdicts.put(key, result)
    return result, domain


# -- DKIM ----------------------------------------------------------------------------------------

def dns_txt_records(name: str, timeout: float = DNS_TIMEOUT) -> list[bytes]:
    """Every TXT record at `name` (strings joined); [] when there is none; raises when DNS fails."""
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:   # timeout, SERVFAIL/REFUSED (NoNameservers), ...
        raise DnsTemporaryError(str(exc)) from exc
    return [b"".join(rdata.strings) for rdata in answer]


def dns_txt(name: bytes | str, timeout: float = DNS_TIMEOUT) -> bytes:
    """dkimpy's dnsfunc: b'' when the record does not exist, an exception when DNS is failing."""
    qname = name.decode("ascii", errors="replace") if isinstance(name, bytes) else name
    records = dns_txt_records(qname, timeout)
    return records[0] if records else b""


def check_dkim(data: bytes) -> list[DkimResult]:
    if b"dkim-signature" not in smtp_policy.header_block(data).lower():
        return []
    try:
        verifier = dkim.DKIM(data)
    except Exception:
        return []
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    return [_verify_one(data, idx) for idx in range(count)]


def _verify_one(data: bytes, idx: int) -> DkimResult:
    verifier = dkim.DKIM(data, minkey=1024, timeout=DNS_TIMEOUT)
    sig = _signature_tags(verifier, idx)
    result = DkimResult("fail", sig.get("d", ""), sig.get("s", ""))
    try:
        result.result = "pass" if verifier.verify(idx=idx, dnsfunc=dns_txt) else "fail"
    except DnsTemporaryError:
        result.result = "temperror"
    except dkim.ValidationError:       # e.g. body hash mismatch: the signature is simply wrong
        result.result = "fail"
    except dkim.KeyFormatError:
        result.result = "permerror"
    except dkim.DKIMException as exc:
        result.result = "temperror" if isinstance(exc.__cause__, DnsTemporaryError) else "permerror"
    except Exception:
        log.exception("dkim verification crashed on signature %d", idx)
        result.result = "temperror"
    return result


def _signature_tags(verifier: dkim.DKIM, idx: int) -> dict[str, str]:
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    try:
        tags = dkim.util.parse_tag_value(signatures[idx])
    except Exception:
        return {}
    return {key.decode(errors="replace"): value.decode(errors="replace").strip().lower() for key, value in tags.items()
            if key in (b"d", b"s")}


# -- DMARC ---------------------------------------------------------------------------------------

def from_domain(data: bytes) -> str:
    found = smtp_policy.header_sender_addresses(data)
    if not found:
        return ""
    return found[0][0].rpartition("@")[2].lower().rstrip(".")


def organizational_domain(domain: str) -> str:
    return _psl.privatesuffix(domain) or domain


def dmarc_record(domain: str) -> dict[str, str] | None:
    """The DMARC tags for `domain` (RFC 7489 6.6.3: the domain, then its organisational domain)."""
    if not settings.SMTP_DNS_CACHE:
        return _dmarc_record(domain)
    found = _verdicts.get(("dmarc", domain), default=False)
    if found is False:
        found = _dmarc_record(domain)     # a DNS failure raises: not remembered
        _verdicts.put(("dmarc", domain), found)
    return dict(found) if found is not None else None


def _dmarc_record(domain: str) -> dict[str, str] | None:
    for name in dict.fromkeys((domain, organizational_domain(domain))):
        texts = [raw.decode("utf-8", errors="replace") for raw in dns_txt_records(f"_dmarc.{name}")]
        records = [record for record in map(_parse_dmarc, texts) if record is not None]
        if len(records) > 1:    # RFC 7489 6.6.3: more than one record means no DMARC at all
            return None
        if records:
            records[0]["_found_at"] = name
            return records[0]
    return None


def _parse_dmarc(text: str) -> dict[str, str] | None:
    # dns_txt joins the strings of the first record; several TXT records are joined there too.
    match = re.match(r"\s*v\s*=\s*DMARC1\s*(?:;(.*)|$)", text, re.IGNORECASE)
    if not match:
        return None
    tags = {}
    for part in (match.group(1) or "").split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            tags[key.strip().lower()] = value.strip().lower()
    return tags


def _aligned(domain: str, header_domain: str, mode: str) -> bool:
    domain, header_domain = domain.lower().rstrip("."), header_domain.lower()
    if mode == "s":
        return domain == header_domain
    return organizational_domain(domain) == organizational_domain(header_domain)


def check_dmarc(checks: SenderChecks) -> tuple[str, str]:
    if not checks.from_domain:
        return "none", ""
    try:
        record = dmarc_record(checks.from_domain)
    except DnsTemporaryError:
        return "temperror", ""
    if record is None:
        return "none", ""
    policy = record.get("p", "none")
    if record["_found_at"] != checks.from_domain and "sp" in record:
        policy = record["sp"]
    spf_ok = checks.spf == "pass" and _aligned(checks.spf_domain, checks.from_domain, record.get("aspf", "r"))
    dkim_ok = any(sig.result == "pass" and _aligned(sig.domain, checks.from_domain, record.get("adkim", "r"))
                  for sig in checks.dkim)
    if spf_ok or dkim_ok:
        return "pass", policy
    # A lookup that failed for a domain that could have aligned might have passed: not a fail.
    spf_unknown = checks.spf == "temperror" and _aligned(checks.spf_domain, checks.from_domain, "r")
    dkim_unknown = any(sig.result == "temperror" and _aligned(sig.domain, checks.from_domain, "r")
                       for sig in checks.dkim)
    if spf_unknown or dkim_unknown:
        return "temperror", policy
    return "fail", policy


def _token(result: str) -> str:
    result = (result or "none").lower()
    return result if result in {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"} else "none"
