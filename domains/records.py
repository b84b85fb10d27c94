"""The DNS records a hosted domain should publish, and their BIND zone-file form.

One function decides what we expect (`expected_records`); the createdomain command, the
wizard's record list, the zone-file download and the live checker all read it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from django.conf import settings

from .models import DkimKey, Domain

DEFAULT_TTL = 3600


@dataclass(frozen=True)
class Record:
    key: str          # stable identifier: "mx", "spf", "dkim:<selector>", "dmarc", …
    owner: str        # fully qualified, no trailing dot
    type: str
    value: str        # presentation value (targets without trailing dot; TXT unquoted)
    required: bool = True
    ttl: int = DEFAULT_TTL
    note: str = ""

    def zone_line(self) -> str:
        return f"{fqdn(self.owner)} {self.ttl} IN {self.type} {zone_value(self)}"


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def txt_strings(value: str) -> str:
    """Quote a TXT value, splitting it into strings of at most 255 bytes (RFC 1035 3.3.14)."""
    raw = value.encode("utf-8")
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode("utf-8").replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for c in chunks)


def zone_value(record: Record) -> str:
    if record.type == "TXT":
        return txt_strings(record.value)
    if record.type == "MX":
        pref, target = record.value.split(None, 1)
        return f"{pref} {fqdn(target)}"
    if record.type in ("CNAME", "PTR"):
        return fqdn(record.value)
    if record.type == "SRV":
        prio, weight, port, target = record.value.split()
        return f"{prio} {weight} {port} {target if target == '.' else fqdn(target)}"
    return record.value


def public_ips() -> list[str]:
    """Our public addresses: the setting, else what MAIL_HOSTNAME resolves to (looked up now)."""
    if settings.MAIL_PUBLIC_IPS:
        return list(settings.MAIL_PUBLIC_IPS)
    try:
        infos = socket.getaddrinfo(settings.MAIL_HOSTNAME, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({info[4][0] for info in infos})


def spf_value(ips: list[str]) -> str:
    mechanisms = ["mx"] + [f"ip6:{ip}" if ":" in ip else f"ip4:{ip}" for ip in ips]
    return "v=spf1 " + " ".join(mechanisms) + " -all"


def expected_records(domain: Domain, ips: list[str] | None = None) -> list[Record]:
    host = settings.MAIL_HOSTNAME
    name = domain.name
    ips = public_ips() if ips is None else ips
    records = [
        Record("mx", name, "MX", f"10 {host}"),
        Record("spf", name, "TXT", spf_value(ips)),
    ]
    for key in domain.dkim_keys.exclude(state=DkimKey.State.RETIRED).order_by("created_at"):
        # A pending key is published (and checked) before it signs; only a signing key is required.
        pending = key.state == DkimKey.State.PENDING
        records.append(Record(f"dkim:{key.selector}", key.dns_name, "TXT", key.txt_value, required=not pending,
                              note="new key: publish it before it starts signing" if pending else ""))
    records += [
        Record("dmarc", f"_dmarc.{name}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{name}"),
        Record("ownership", f"_mailhost.{name}", "TXT", f"mailhost-verification={domain.ownership_token}",
               required=False, note="proves you control the domain"),
        Record("mta-sts", f"_mta-sts.{name}", "TXT", f"v=STSv1; id={domain.created_at:%Y%m%d%H%M%S}",
               required=False),
        Record("mta-sts-host", f"mta-sts.{name}", "CNAME", host, required=False),
        Record("tls-rpt", f"_smtp._tls.{name}", "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{name}",
               required=False),
        Record("srv-submissions", f"_submissions._tcp.{name}", "SRV", f"0 1 465 {host}", required=False),
        Record("srv-submission", f"_submission._tcp.{name}", "SRV", f"0 1 587 {host}", required=False),
        Record("srv-imaps", f"_imaps._tcp.{name}", "SRV", f"0 1 993 {host}", required=False),
        Record("srv-pop3s", f"_pop3s._tcp.{name}", "SRV", f"0 1 995 {host}", required=False),
        Record("autoconfig", f"autoconfig.{name}", "CNAME", host, required=False),
        Record("autodiscover", f"autodiscover.{name}", "CNAME", host, required=False),
    ]
    for ip in ips:
        records.append(Record("host-aaaa" if ":" in ip else "host-a", host, "AAAA" if ":" in ip else "A", ip,
                              note="the mail host's own address; may belong to another zone"))
    return records


def zone_file(domain: Domain) -> str:
    lines = [f"; DNS records for {domain.name} served by {settings.MAIL_HOSTNAME}"]
    lines += [r.zone_line() for r in expected_records(domain)]
    return "\n".join(lines) + "\n"
