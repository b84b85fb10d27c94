"""The SMTP client: delivers one leased batch (one destination domain) over as few connections
as possible.

One connection carries every message of the batch (RSET between them), each with all its
recipients for that domain, as Postfix does. STARTTLS whenever the peer offers it; under an
MTA-STS `enforce` policy only listed hosts with a valid certificate are used, and anything less
defers. Each recipient's outcome is committed the moment the peer answers the final dot, so the
window in which a crash can duplicate a message is one round trip wide — the least any MTA can do.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections import OrderedDict

from django.conf import settings

from . import mta_sts, routing
from .models import QueuedRecipient, Suppression
from .queue import Outcome, record, start_attempt

log = logging.getLogger(__name__)


class HostFailed(Exception):
    """This host cannot take mail right now; try the next one."""


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _kind(code: int) -> str:
    if 200 <= code < 300:
        return "delivered"
    return "bounced" if 500 <= code < 600 else "deferred"


class Connection:
    """An SMTP session to one host, with TLS as the policy demands."""

    def __init__(self, host: routing.Host, policy: mta_sts.Policy, relay: bool):
        self.host = host
        self.policy = policy
        self.tls_version = ""
        self.smtp: smtplib.SMTP | None = None
        timeout = getattr(settings, "SMTP_OUTBOUND_TIMEOUT", 60)
        if policy.enforced and not policy.allows(host.name):
            raise HostFailed(f"{host.name} is not listed in the MTA-STS policy")
        errors = []
        for address in host.addresses:
            try:
                smtp = smtplib.SMTP(timeout=timeout, local_hostname=settings.MAIL_HOSTNAME)
                smtp.connect(address, host.port)
                break
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(f"{address}: {exc}")
        else:
            raise HostFailed(f"cannot connect to {host.name}: {'; '.join(errors)}")
        self.smtp = smtp
        try:
            self._hello(relay)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            self.close()
            raise HostFailed(f"{host.name}: {exc}") from exc

    def _hello(self, relay: bool) -> None:
        code, msg = self.smtp.ehlo()
        if not 200 <= code < 300:
            code, msg = self.smtp.helo()
            if not 200 <= code < 300:
                raise HostFailed(_reply(code, msg))
        if self.smtp.has_extn("starttls"):
            ctx = mta_sts.tls_context(verify=self.policy.enforced)
            # smtplib checks the certificate against the address it connected to: use the MX name.
            self.smtp._host = self.host.name
            code, msg = self.smtp.starttls(context=ctx)
            if code != 220:
                if self.policy.enforced:
                    raise HostFailed(f"{self.host.name} refused STARTTLS: {_reply(code, msg)}")
                return
            self.tls_version = self.smtp.sock.version() or ""
            self.smtp.ehlo()  # RFC 3207: forget what was said before TLS and greet again
        elif self.policy.enforced:
            raise HostFailed(f"{self.host.name} offers no STARTTLS but MTA-STS enforces TLS")

    def send(self, sender: str, rcpts: list[QueuedRecipient], data: bytes) -> dict[int, Outcome]:
        """One transaction; an Outcome per recipient. Raises HostFailed when the session broke."""
        smtp = self.smtp
        try:
            code, msg = smtp.mail(sender)
            if code != 250:
                smtp.rset()
                return {r.pk: Outcome(_kind(code), _reply(code, msg), self.tls_version) for r in rcpts}
            results: dict[int, Outcome] = {}
            accepted = []
            for r in rcpts:
                code, msg = smtp.rcpt(r.address)
                if code in (250, 251):
                    accepted.append(r)
                else:
                    results[r.pk] = Outcome(_kind(code), _reply(code, msg), self.tls_version)
            if not accepted:
                smtp.rset()
                return results
            code, msg = smtp.data(data)
            for r in accepted:
                results[r.pk] = Outcome(_kind(code), _reply(code, msg), self.tls_version)
            return results
        except smtplib.SMTPDataError as exc:  # 4xx/5xx to DATA itself, smtplib raises for those
            return {r.pk: Outcome(_kind(exc.smtp_code), _reply(exc.smtp_code, exc.smtp_error), self.tls_version)
                    for r in rcpts}
        except (OSError, smtplib.SMTPException) as exc:
            raise HostFailed(f"{self.host.name}: {exc}") from exc

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None


def deliver_batch(run: str, rows: list[QueuedRecipient]) -> None:
    """Deliver leased rows (all for one domain); every row gets an outcome or its lease runs out."""
    if not rows:
        return
    rows = _drop_suppressed(run, rows)
    domain = rows[0].domain if rows else ""
    if not rows:
        return
    relay = bool(settings.SMTP_RELAY_HOST)
    try:
        hosts = routing.mx_hosts(domain)
        policy = mta_sts.Policy() if relay else mta_sts.policy_for(domain)
    except routing.RoutingError as exc:
        status = getattr(exc, "status", "4.4.3")
        code = 550 if exc.permanent else 451
        outcome = Outcome("bounced" if exc.permanent else "deferred", f"{code} {status} {exc}")
        for r in rows:
            record(run, r, outcome)
        return
    by_message: OrderedDict[int, list[QueuedRecipient]] = OrderedDict()
    for r in rows:
        by_message.setdefault(r.message_id, []).append(r)
    pending = list(by_message.values())
    last_error = "no host tried"
    for host in hosts:
        if not pending:
            break
        try:
            conn = Connection(host, policy, relay)
        except HostFailed as exc:
            last_error = str(exc)
            log.info("%s", exc)
            continue
        try:
            while pending:
                group = pending[0]
                ids = start_attempt(run, [r.pk for r in group])
                group = [r for r in group if r.pk in ids]
                if group:
                    message = group[0].message
                    results = conn.send(message.sender, group, bytes(message.data))
                    for r in group:
                        record(run, r, results[r.pk])
                pending.pop(0)
        except HostFailed as exc:
            last_error = str(exc)
            log.info("%s", exc)
        finally:
            conn.close()
    if pending:
        outcome = Outcome("deferred", f"451 4.4.1 {last_error}")
        for group in pending:
            for r in group:
                record(run, r, outcome)


def _drop_suppressed(run: str, rows: list[QueuedRecipient]) -> list[QueuedRecipient]:
    """Bounce recipients suppressed for their sending domain (one query per batch, not per row)."""
    from django.utils import timezone

    domain_ids = {r.message.sender_domain_id for r in rows if r.message.sender_domain_id}
    if not domain_ids:
        return rows
    active = {(s.domain_id, s.address): s for s in Suppression.objects.filter(
        domain_id__in=domain_ids, address__in={r.address.lower() for r in rows}, expires_at__gt=timezone.now())}
    keep = []
    for r in rows:
        suppressed = active.get((r.message.sender_domain_id, r.address.lower()))
        if suppressed:
            record(run, r, Outcome("bounced", f"550 5.7.1 {r.address} is suppressed after a hard bounce "
                                              f"until {suppressed.expires_at:%Y-%m-%d}"))
        else:
            keep.append(r)
    return keep
