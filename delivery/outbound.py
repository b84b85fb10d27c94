"""The SMTP client: delivers leased batches (one destination domain each) over as few connections
as possible, several destinations at once.

One connection carries every message of the batch (RSET after a refusal), each with all its
recipients for that domain, pipelined where the peer offers PIPELINING, as Postfix does.
STARTTLS whenever the peer offers it; under an MTA-STS `enforce` policy only listed hosts with a
valid certificate are used, and anything less defers. Each recipient's outcome is committed the
moment the peer answers the final dot, so the window in which a crash can duplicate a message is
one round trip wide — the least any MTA can do.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import smtplib
import ssl
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from queue import SimpleQueue

from django.conf import settings
from django.db import connection, connections

from mailhost.addresses import AddressError, normalize_domain
from mailhost.threads import name_native_thread

from . import mta_sts, routing
from .models import QueuedRecipient, Suppression
from .queue import Outcome, claim_due, gather_pause, record, record_delivered, rows_of, start_attempt

log = logging.getLogger(__name__)


# How long a draining worker waits after a short round: fewer batches than it asked for, or
# fewer than DRAIN_GATHER_ROWS recipients in them. While mail trickles in, a round every few
# milliseconds caught one or two messages per domain and the claim, take-over and in-flight
# statements cost more than the deliveries (the worker's CPU per message fell by a third with
# this wait); a tenth of a second is all it adds to any message's way out, and on SQLite less
# once nothing more is being queued (queue.gather_pause).
DRAIN_GATHER_SECONDS = 0.1
DRAIN_GATHER_ROWS = 50


def relay_login() -> tuple[str, str] | None:
    """(user, password) for SMTP_RELAY_HOST when SMTP_RELAY_USER is set, else None."""
    user = getattr(settings, "SMTP_RELAY_USER", "")
    return (user, getattr(settings, "SMTP_RELAY_PASSWORD", "")) if user else None


def envelope_address(address: str) -> str:
    """The address as it goes on the wire: a Unicode domain as its A-label when the local part
    is ASCII, so the mail needs no SMTPUTF8 (RFC 6531 section 3.2: a sender downgrades what it can)."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if local.isascii():
        try:
            return f"{local}@{normalize_domain(domain)}"
        except AddressError:
            pass
    return address


def dot_stuffed(data: bytes) -> bytes:
    """The message as it goes after DATA's 354 (RFC 5321 4.5.2): a dot doubled at the start of
    every line, CRLF at the end, then `.CRLF`. What smtplib's `data()` sends, without its
    regular expression over the whole message when every line ends in CRLF (all mail we
    queue: prepared, or refused at DATA for a bare CR or LF)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        stuffed = (b"." + data if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n..")
    else:
        stuffed = re.sub(rb"(?m)^\.", b"..", data)
    return stuffed + (b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n")


class HostFailed(Exception):
    """This host cannot take mail right now; try the next one."""


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


# Not an outcome to record: the peer's recipient limit was reached, send these in a new transaction.
AGAIN = "again"


def recipient_limit() -> int:
    """Recipients per SMTP transaction (Postfix's smtp_destination_recipient_limit, also 50):
    many receivers take at most 100 and answer 452 after that."""
    return max(1, getattr(settings, "SMTP_OUTBOUND_RECIPIENT_LIMIT", 50))


def _kind(code: int) -> str:
    if 200 <= code < 300:
        return "delivered"
    return "bounced" if 500 <= code < 600 else "deferred"


class _HandshakeFailed(Exception):
    """The TLS handshake (or the greeting right after it) broke the session."""


def relay_implicit_tls() -> bool:
    """Whether the smarthost speaks TLS from the first byte (RFC 8314) instead of STARTTLS."""
    return getattr(settings, "SMTP_RELAY_TLS", "starttls") == "implicit"


class _ImplicitTLS(smtplib.SMTP):
    """smtplib's SMTP over a socket wrapped in TLS before the banner, checked against `server_name`.

    smtplib.SMTP_SSL checks the certificate against the address it connected to; we connect to
    an address and check the smarthost's name, as for STARTTLS.
    """

    def __init__(self, server_name: str, context: ssl.SSLContext, **kwargs):
        self.server_name, self.context = server_name, context
        super().__init__(**kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        try:
            return self.context.wrap_socket(sock, server_hostname=self.server_name)
        except BaseException:
            sock.close()
            raise


class Connection:
    """An SMTP session to one host, with TLS as the policy demands."""

    def __init__(self, host: routing.Host, policy: mta_sts.Policy, relay: bool):
        self.host = host
        self.policy = policy
        self.tls_version = ""
        self.smtp: smtplib.SMTP | None = None
        if policy.enforced and not policy.allows(host.name):
            raise HostFailed(f"{host.name} is not listed in the MTA-STS policy")
        login = relay_login() if relay else None
        # Certificates are checked where a policy demands TLS, and where credentials ride on it:
        # otherwise anyone on the path could read and replay them.
        verify = policy.enforced or login is not None
        implicit = relay and relay_implicit_tls()
        address = self._connect(host.addresses, mta_sts.tls_context(verify=verify) if implicit else None)
        try:
            try:
                self._hello(login, verify, starttls=not implicit)
            except _HandshakeFailed as exc:
                if verify or implicit:
                    raise HostFailed(f"{host.name}: TLS handshake failed: {exc}") from exc
                # Opportunistic TLS that breaks must not cost the mail (RFC 7435): like Postfix,
                # try the same address again on a fresh connection, without STARTTLS.
                log.info("%s: TLS handshake failed (%s); retrying in plaintext", host.name, exc)
                self.close()
                self._connect((address,), None)
                self._hello(login, verify, starttls=False)
        except HostFailed:
            self.close()
            raise
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise HostFailed(f"{host.name}: {exc}") from exc

    def _connect(self, addresses: tuple[str, ...], implicit_tls: ssl.SSLContext | None) -> str:
        """Open `self.smtp` to the first address that answers; which one it was."""
        timeout = getattr(settings, "SMTP_OUTBOUND_TIMEOUT", 60)
        errors = []
        for address in addresses:
            if implicit_tls:
                smtp = _ImplicitTLS(self.host.name, implicit_tls, timeout=timeout,
                                    local_hostname=settings.MAIL_HOSTNAME)
            else:
                smtp = smtplib.SMTP(timeout=timeout, local_hostname=settings.MAIL_HOSTNAME)
            try:
                smtp.connect(address, self.host.port)
            except ssl.SSLError as exc:  # implicit TLS: nothing was said in plaintext, nothing will be
                smtp.close()
                raise HostFailed(f"{self.host.name}: TLS handshake failed: {exc}") from exc
            except (OSError, smtplib.SMTPException) as exc:
                smtp.close()
                errors.append(f"{address}: {exc}")
                continue
            self.smtp = smtp
            if implicit_tls:
                self.tls_version = smtp.sock.version() or ""
            return address
        raise HostFailed(f"cannot connect to {self.host.name}: {'; '.join(errors)}")

    def _hello(self, login: tuple[str, str] | None, verify: bool, starttls: bool) -> None:
        code, msg = self.smtp.ehlo()
        if not 200 <= code < 300:
            code, msg = self.smtp.helo()
            if not 200 <= code < 300:
                raise HostFailed(_reply(code, msg))
        if starttls and self.smtp.has_extn("starttls"):
            self._starttls(verify)
        if not self.tls_version:
            if self.policy.enforced:
                raise HostFailed(f"{self.host.name} offers no STARTTLS but MTA-STS enforces TLS")
            if login is not None:
                raise HostFailed(f"{self.host.name} offers no STARTTLS: the relay credentials are never sent "
                                 f"in plaintext")
        if login is not None:
            self._login(*login)

    def _starttls(self, verify: bool) -> None:
        ctx = mta_sts.tls_context(verify=verify)
        # smtplib checks the certificate against the address it connected to: use the MX name.
        self.smtp._host = self.host.name
        try:
            self.smtp.starttls(context=ctx)
        except smtplib.SMTPResponseException as exc:
            # A refusal (454 and the like) leaves the session in plaintext (RFC 3207): go on in it
            # unless TLS is required, which the caller checks.
            log.info("%s refused STARTTLS: %s", self.host.name, _reply(exc.smtp_code, exc.smtp_error))
            if verify:
                raise HostFailed(f"{self.host.name} refused STARTTLS: "
                                 f"{_reply(exc.smtp_code, exc.smtp_error)}") from exc
            return
        except (OSError, smtplib.SMTPException) as exc:  # ssl.SSLError, a peer that hung up
            raise _HandshakeFailed(str(exc) or type(exc).__name__) from exc
        try:
            self.smtp.ehlo()  # RFC 3207: forget what was said before TLS and greet again
        except (OSError, smtplib.SMTPException) as exc:
            raise _HandshakeFailed(str(exc) or type(exc).__name__) from exc
        self.tls_version = self.smtp.sock.version() or ""

    def _login(self, user: str, password: str) -> None:
        """AUTH at the smarthost; a refusal defers the mail (a password fixed later sends it)."""
        try:
            self.smtp.login(user, password)
        except smtplib.SMTPAuthenticationError as exc:
            raise HostFailed(f"{self.host.name} refused the relay credentials: "
                             f"{_reply(exc.smtp_code, exc.smtp_error)}") from exc
        except smtplib.SMTPException as exc:  # no AUTH offered, or no mechanism in common
            raise HostFailed(f"{self.host.name} cannot take the relay credentials: {exc}") from exc

    def _mail_options(self, sender: str, addresses: list[str], data: bytes) -> list[str] | Outcome:
        """What MAIL FROM declares to this peer, or the bounce when it cannot take the message.

        SIZE (RFC 1870) lets a peer refuse a message before it is sent, and one over the size
        the peer announced is not sent at all, as Postfix does; BODY=8BITMIME (RFC 6152) says
        what an 8-bit body is. An address that stays non-ASCII needs SMTPUTF8 (RFC 6531), and a
        peer without it can never take the mail: that bounces (5.6.7) instead of retrying.
        """
        smtp, options = self.smtp, []
        if smtp.has_extn("size"):
            limit = smtp.esmtp_features["size"]
            limit = int(limit) if limit.isdigit() else 0
            if limit and len(data) > limit:
                return Outcome("bounced", f"552 5.3.4 message size {len(data)} exceeds the size limit {limit} "
                                          f"of {self.host.name}", self.tls_version)
            options.append(f"SIZE={len(data)}")
        if smtp.has_extn("8bitmime") and not data.isascii():
            options.append("BODY=8BITMIME")
        if not (sender.isascii() and all(a.isascii() for a in addresses)):
            if not smtp.has_extn("smtputf8"):
                return Outcome("bounced", f"553 5.6.7 {self.host.name} does not support SMTPUTF8, which an "
                                          f"internationalized address needs", self.tls_version)
            options.append("SMTPUTF8")
        return options

    def send(self, sender: str, rcpts: list[QueuedRecipient], data: bytes) -> dict[int, Outcome]:
        """One transaction; an Outcome per recipient. Raises HostFailed when the session broke."""
        smtp = self.smtp
        sender = envelope_address(sender)
        addresses = {r.pk: envelope_address(r.address) for r in rcpts}
        options = self._mail_options(sender, list(addresses.values()), data)
        if isinstance(options, Outcome):
            return {r.pk: options for r in rcpts}
        if smtp.has_extn("pipelining"):
            return self._send_pipelined(sender, options, rcpts, addresses, data)
        results: dict[int, Outcome] = {}
        try:
            code, msg = smtp.mail(sender, options)
            if code != 250:
                smtp.rset()
                return {r.pk: Outcome(_kind(code), _reply(code, msg), self.tls_version) for r in rcpts}
            accepted = []
            for n, r in enumerate(rcpts):
                code, msg = smtp.rcpt(addresses[r.pk])
                if code in (250, 251):
                    accepted.append(r)
                elif code == 452 and accepted:
                    # Too many recipients for one transaction (RFC 5321 4.5.3.1.10): the rest go
                    # in the next one, now, instead of waiting a retry for a limit of the peer's.
                    for rest in rcpts[n:]:
                        results[rest.pk] = Outcome(AGAIN, _reply(code, msg), self.tls_version)
                    break
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
            # It is the answer for the recipients the peer had taken; the others keep their own
            # (a refusal at RCPT, or the next transaction). RSET so the next message starts clean.
            refused = Outcome(_kind(exc.smtp_code), _reply(exc.smtp_code, exc.smtp_error), self.tls_version)
            smtp.rset()
            return {r.pk: results.get(r.pk, refused) for r in rcpts}
        except (OSError, smtplib.SMTPException) as exc:
            raise HostFailed(f"{self.host.name}: {exc}") from exc

    def _send_pipelined(self, sender: str, options: list[str], rcpts: list[QueuedRecipient],
                        addresses: dict[int, str], data: bytes) -> dict[int, Outcome]:
        """`send` to a peer that offers PIPELINING (RFC 2920), as Postfix does: MAIL, every RCPT
        and DATA go in one write and their replies are read in order, so a message costs two
        round trips instead of three plus one per recipient (over the internet, most of a
        delivery's time) and both ends a few system calls fewer.

        Every reply is read whatever came before it, so the session stays in step: after a
        refused MAIL the peer refuses the rest (503) and nothing is sent; a DATA the peer
        accepts although it took no recipient gets a lone dot, as RFC 2920 section 3.1 asks.
        """
        smtp, tls = self.smtp, self.tls_version
        commands = [f"MAIL FROM:{smtplib.quoteaddr(sender)}" + "".join(f" {o}" for o in options)]
        commands += [f"RCPT TO:{smtplib.quoteaddr(addresses[r.pk])}" for r in rcpts]
        commands.append("DATA")
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        results: dict[int, Outcome] = {}
        try:
            smtp.send(("\r\n".join(commands) + "\r\n").encode(encoding))
            mail = smtp.getreply()
            rcpt_replies = [smtp.getreply() for _ in rcpts]
            code, msg = smtp.getreply()     # to DATA
            accepted, over_limit = [], []
            if mail[0] != 250:
                results = {r.pk: Outcome(_kind(mail[0]), _reply(*mail), tls) for r in rcpts}
            else:
                for r, (rcpt_code, rcpt_msg) in zip(rcpts, rcpt_replies, strict=True):
                    if rcpt_code in (250, 251):
                        accepted.append(r)
                    elif rcpt_code == 452:
                        over_limit.append((r, _reply(rcpt_code, rcpt_msg)))
                    else:
                        results[r.pk] = Outcome(_kind(rcpt_code), _reply(rcpt_code, rcpt_msg), tls)
                # Too many recipients for one transaction (RFC 5321 4.5.3.1.10): those go in the
                # next one at once; with none taken, 452 is a plain deferral.
                for r, reply in over_limit:
                    results[r.pk] = Outcome(AGAIN if accepted else "deferred", reply, tls)
            if code != 354:
                for r in accepted:  # DATA refused: its reply is theirs
                    results[r.pk] = Outcome(_kind(code), _reply(code, msg), tls)
                smtp.rset()
                return results
            if not accepted:
                smtp.send(b".\r\n")
                smtp.getreply()
                smtp.rset()
                return results
            smtp.send(dot_stuffed(data))
            code, msg = smtp.getreply()
            for r in accepted:
                results[r.pk] = Outcome(_kind(code), _reply(code, msg), tls)
            return results
        except (OSError, smtplib.SMTPException) as exc:
            raise HostFailed(f"{self.host.name}: {exc}") from exc

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None


# Idle connections parked by this worker process, as Postfix's connection cache does: the next
# batch for the same MX host (often another domain on the same provider, or the same domain a
# moment later) skips connect, EHLO and STARTTLS. A parked connection is reused only within
# SMTP_CONNECTION_CACHE_TIME seconds (0 turns the cache off), after an RSET proves it alive, and
# only for the same TLS demands it was opened under. Up to one per delivery lane and host.
_idle: dict[tuple, list[tuple[float, Connection]]] = {}
_idle_lock = threading.Lock()


def _cache_time() -> float:
    return float(getattr(settings, "SMTP_CONNECTION_CACHE_TIME", 2.0))


def _key(host: routing.Host, policy: mta_sts.Policy, relay: bool) -> tuple:
    return (host.name, host.addresses, host.port, policy.enforced, relay)


def connect(host: routing.Host, policy: mta_sts.Policy, relay: bool) -> Connection:
    """A live connection to `host`: a parked one when it is fresh and answers RSET, else a new one."""
    if policy.enforced and not policy.allows(host.name):
        raise HostFailed(f"{host.name} is not listed in the MTA-STS policy")
    oldest = time.monotonic() - _cache_time()
    stale, reused = [], None
    with _idle_lock:
        entries = _idle.get(_key(host, policy, relay))
        if entries and entries[-1][0] >= oldest:
            reused = entries.pop()[1]     # the most recently parked: likeliest still open
        for key, entries in list(_idle.items()):
            stale += [conn for parked_at, conn in entries if parked_at < oldest]
            entries[:] = [entry for entry in entries if entry[0] >= oldest]
            if not entries:
                del _idle[key]
    for conn in stale:
        conn.close()
    if reused is not None:
        try:
            if reused.smtp.rset()[0] == 250:
                return reused
        except (OSError, smtplib.SMTPException):
            pass
        reused.close()
    return Connection(host, policy, relay)


def park(conn: Connection, relay: bool) -> None:
    """Keep a healthy connection for the next batch, or close it when caching is off."""
    key = _key(conn.host, conn.policy, relay)
    if _cache_time() > 0 and conn.smtp is not None:
        with _idle_lock:
            entries = _idle.setdefault(key, [])
            if len(entries) < parallel_destinations():
                entries.append((time.monotonic(), conn))
                return
    conn.close()


def parked() -> list[Connection]:
    """Every connection parked in this process (to close them, or to count them)."""
    with _idle_lock:
        return [conn for entries in _idle.values() for _, conn in entries]


def close_parked() -> None:
    with _idle_lock:
        conns = [conn for entries in _idle.values() for _, conn in entries]
        _idle.clear()
    for conn in conns:
        conn.close()


def parallel_destinations() -> int:
    """How many destinations one worker process delivers to at once (QUEUE_PARALLEL_DESTINATIONS)."""
    return max(1, int(getattr(settings, "QUEUE_PARALLEL_DESTINATIONS", 4)))


class _Lanes:
    """A worker process's delivery threads, each with its own database connection, kept from
    one run to the next (a new SQLite connection and its pragmas per run would cost more than
    the thread). Made on first use in the process that delivers: Celery's prefork children
    inherit no threads from the parent that forked them."""

    def __init__(self, size: int):
        self.pid, self.size = os.getpid(), size
        self.jobs: SimpleQueue = SimpleQueue()
        self.threads = [threading.Thread(target=self._serve, name=f"delivery-lane-{n}", daemon=True)
                        for n in range(size)]
        for thread in self.threads:
            thread.start()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self.jobs.put((future, fn, args))
        return future

    def _serve(self) -> None:
        from .db_writes import refresh_connection

        name_native_thread()
        try:
            while (job := self.jobs.get()) is not None:
                future, fn, args = job
                try:
                    refresh_connection()
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the run that waits
                    future.set_exception(exc)
        finally:
            connections.close_all()

    def stop(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


_lanes: _Lanes | None = None
_lanes_lock = threading.Lock()


def _lane_pool(size: int) -> _Lanes:
    global _lanes
    with _lanes_lock:
        if _lanes is None or _lanes.pid != os.getpid() or _lanes.size != size:
            if _lanes is not None and _lanes.pid == os.getpid():
                _lanes.stop()
            _lanes = _Lanes(size)
        return _lanes


def stop_lanes() -> None:
    """End this process's delivery threads and close their database connections."""
    global _lanes
    with _lanes_lock:
        lanes, _lanes = _lanes, None
    if lanes is not None and lanes.pid == os.getpid():
        lanes.stop()


def deliver_batch(run: str, rows: list[QueuedRecipient], *, marked: bool = False) -> None:
    """Deliver leased rows, domain by domain; every row gets an outcome or its lease runs out.

    The rows may span many domains (a task carries several claimed batches). All of them are
    marked in flight in one statement. Up to QUEUE_PARALLEL_DESTINATIONS domains are delivered
    at once, each lane (this thread and pool threads) taking the next domain when it is done
    with one: over the internet a delivery is mostly waiting for the peer, and one destination
    at a time held a worker to a few messages a second to distant peers (Postfix runs up to 20
    deliveries per destination by default). Within a lane a connection that just delivered one
    domain's mail goes straight on to the lane's next domain on the same MX host, as it would
    to the next message: only connections parked between runs are probed with RSET. A lane that
    breaks (a bug of ours) leaves its domain's rows to their lease and the other domains to the
    other lanes; its error is raised once all have finished. `marked`: the claim already marked
    the rows in flight for this run (`claim_due(run=...)`).
    """
    rows = _drop_suppressed(run, _hold_suspended(run, rows))
    by_domain: OrderedDict[str, list[QueuedRecipient]] = OrderedDict()
    for r in rows:
        by_domain.setdefault(r.domain, []).append(r)
    in_flight = _InFlight(run, [r.pk for r in rows], marked=marked)
    work = _Destinations(by_domain.items())
    lanes = min(parallel_destinations(), len(by_domain))
    if lanes <= 1 or connection.in_atomic_block:
        # Inside a caller's transaction every write must stay in it: one lane, this thread.
        _deliver_lane(run, work, in_flight)
        return
    pool = _lane_pool(parallel_destinations() - 1)
    others = [pool.submit(_deliver_lane, run, work, in_flight) for _ in range(lanes - 1)]
    errors = []
    try:
        _deliver_lane(run, work, in_flight)
    except Exception as exc:  # noqa: BLE001 - raised below, once every lane has finished
        errors.append(exc)
    errors += filter(None, (f.exception() for f in others))
    if errors:
        raise errors[0]


class _Destinations:
    """A run's destinations, handed out one at a time to whichever delivery lane is free."""

    def __init__(self, items):
        self._items = deque(items)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, list[QueuedRecipient]]:
        try:
            return self._items.popleft()    # atomic: two lanes never take the same domain
        except IndexError:
            raise StopIteration from None


def _deliver_lane(run: str, work: _Destinations, in_flight: _InFlight) -> None:
    """Deliver destinations from `work` one after another until none is left.

    Each lane holds its own connections, and a connection that just delivered one domain's mail
    goes straight on to the lane's next domain on the same MX host.
    """
    held: dict[tuple, Connection] = {}
    try:
        for domain, domain_rows in work:
            _deliver_domain(run, domain, domain_rows, in_flight, held)
    finally:
        for key, conn in held.items():
            park(conn, relay=key[-1])


def claim_round(batches: int) -> tuple[str, int]:
    """Lease up to `batches` due batches straight to a new run of this worker's, marked in
    flight; returns the run and how many batches it holds (0: nothing was due)."""
    run = secrets.token_hex(12)
    return run, len(claim_due(max_batches=batches, run=run))


def deliver_claimed(run: str) -> int:
    """Deliver what `claim_round` leased to `run`; returns how many recipient rows it held."""
    rows = rows_of(run)
    deliver_batch(run, rows, marked=True)
    return len(rows)


def deliver_due(seconds: float, batches: int) -> int:
    """Claim and deliver what is due, a few batches at a time, until nothing is or time is up.

    A worker that has just finished its task keeps going instead of waiting for the next
    beat tick and a broker round trip per batch: under load that wait, not the work, set the
    pace. Claims go through the same leases as the sweep's, so two workers draining at once
    never share a row. Returns how many batches it delivered.
    """
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        run, claimed = claim_round(batches)
        if not claimed:
            break
        rows = deliver_claimed(run)
        done += claimed
        if claimed < batches or rows < DRAIN_GATHER_ROWS:
            # The queue is (nearly) drained: let a little mail gather rather than pay a whole
            # claim for every message or two that arrives.
            gather_pause(DRAIN_GATHER_SECONDS)
    return done


def _deliver_domain(run: str, domain: str, rows: list[QueuedRecipient], in_flight: _InFlight,
                    held: dict[tuple, Connection]) -> None:
    ours = in_flight.ours()
    if not any(r.pk in ours for r in rows):
        return  # finished by an earlier run of the same task, or taken back after a lost lease
    relay = bool(settings.SMTP_RELAY_HOST)
    try:
        hosts = routing.mx_hosts(domain)
        policy = mta_sts.Policy() if relay else mta_sts.policy_for_delivery(domain)
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
    limit = recipient_limit()
    pending = [rows[i:i + limit] for rows in by_message.values() for i in range(0, len(rows), limit)]
    last_error = "no host tried"
    for host in hosts:
        if not pending:
            break
        key = _key(host, policy, relay)
        while pending:
            try:
                conn = held.pop(key, None) if policy.allows(host.name) or not policy.enforced else None
                conn = conn or connect(host, policy, relay)
            except HostFailed as exc:
                last_error = str(exc)
                log.info("%s", exc)
                break
            abandoned = healthy = False
            try:
                abandoned = _send_pending(run, conn, pending, in_flight)
                healthy = not abandoned
            except HostFailed as exc:
                last_error = str(exc)
                log.info("%s", exc)
            finally:
                if healthy:
                    held[key] = conn
                else:
                    conn.close()
            if not abandoned:
                break  # done, or this host failed: the next one takes what is left
    if pending:
        outcome = Outcome("deferred", f"451 4.4.1 {last_error}")
        for group in pending:
            for r in group:
                record(run, r, outcome)


def _send_pending(run: str, conn: Connection, pending: list[list[QueuedRecipient]], in_flight: _InFlight) -> bool:
    """Send the pending groups over `conn`, committing each outcome as the peer answers.

    Returns False when none is left. True when an error of our own (a bug, not the peer) broke
    off a message: that message is deferred like any failed attempt, so it retries on the
    schedule and expires with a DSN at the end instead of staying leased and retried for ever,
    and the session, in an unknown state, is given up; a fresh one takes the rest. Raises
    HostFailed when the session with the peer broke.
    """
    while pending:
        ours = in_flight.ours()
        group = [r for r in pending[0] if r.pk in ours]
        again = []
        if group:
            message = group[0].message
            try:
                results = conn.send(message.sender, group, bytes(message.data))
            except HostFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.exception("local error delivering %s to %s", message.queue_id, conn.host.name)
                pending.pop(0)
                reply = f"451 4.3.0 Local error while delivering: {type(exc).__name__}: {exc}"[:500]
                _record_results(run, group, {r.pk: Outcome("deferred", reply) for r in group})
                return True
            again = [r for r in group if results[r.pk].kind == AGAIN]
            _record_results(run, [r for r in group if r not in again], results)
        pending.pop(0)
        if again:
            pending.insert(0, again)
    return False


class _InFlight:
    """Marks a run's rows in flight in one UPDATE and says which are still this run's.

    One statement per run instead of one per message. The mark also extends the lease; it is
    renewed (for the rows the run still owns) once it is older than a tenth of
    QUEUE_LEASE_SECONDS, so a slow run keeps its rows as before. A run whose rows were already
    finished (the same task run twice) gets none back and sends nothing.
    """

    def __init__(self, run: str, ids: list[int], marked: bool = False):
        self.run = run
        self.all_ids = ids
        self.marked_at: float | None = time.monotonic() if marked else None
        self.ids: set[int] = set(ids) if marked else set()
        self.lock = threading.Lock()    # the run's delivery lanes share it

    def ours(self) -> set[int]:
        renew_after = getattr(settings, "QUEUE_LEASE_SECONDS", 300) / 10
        if self.marked_at is None or time.monotonic() - self.marked_at > renew_after:
            with self.lock:
                if self.marked_at is None or time.monotonic() - self.marked_at > renew_after:
                    self.ids = set(start_attempt(self.run, self.all_ids))
                    self.marked_at = time.monotonic()
        return self.ids


def _record_results(run: str, group: list[QueuedRecipient], results: dict[int, Outcome]) -> None:
    """Commit one message's outcomes now: the recipients the peer took in one transaction."""
    delivered = [r for r in group if results[r.pk].kind == "delivered"]
    replies = {(results[r.pk].reply, results[r.pk].tls_version) for r in delivered}
    if len(replies) == 1:
        record_delivered(run, delivered, results[delivered[0].pk])
    else:
        delivered = []
    for r in group:
        if r not in delivered:
            record(run, r, results[r.pk])


def _hold_suspended(run: str, rows: list[QueuedRecipient]) -> list[QueuedRecipient]:
    """Mail of a suspended sending domain does not leave, even what was queued before.

    A domain is suspended to stop it (a compromised account sending spam): letting its queue
    drain would finish the job. Its mail is deferred like any temporary failure, so it goes
    out if the domain is resumed within the queue lifetime and expires with it otherwise.
    """
    keep = []
    for r in rows:
        domain = r.message.sender_domain
        if domain is not None and not domain.active:
            record(run, r, Outcome("deferred", f"451 4.7.1 The sending domain {domain.name} is suspended"))
        else:
            keep.append(r)
    return keep


def _any_suppressed(domain_ids: set[int], addresses: set[str], now) -> bool:
    """Whether any of these addresses is suppressed for any of these domains, in plain SQL.

    Asked for every batch and nearly always answered no; compiling the ORM's query with its two
    IN lists cost a tenth of a draining worker's samples, more than running it.
    """
    table = connection.ops.quote_name(Suppression._meta.db_table)
    sql = (f"SELECT 1 FROM {table} WHERE domain_id IN ({', '.join(['%s'] * len(domain_ids))}) "
           f"AND address IN ({', '.join(['%s'] * len(addresses))}) AND expires_at > %s LIMIT 1")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*domain_ids, *addresses, connection.ops.adapt_datetimefield_value(now)])
        return cursor.fetchone() is not None


def _drop_suppressed(run: str, rows: list[QueuedRecipient]) -> list[QueuedRecipient]:
    """Bounce recipients suppressed for their sending domain (one query per batch, not per row)."""
    from django.utils import timezone

    domain_ids = {r.message.sender_domain_id for r in rows if r.message.sender_domain_id}
    if not domain_ids:
        return rows
    addresses = {r.address.lower() for r in rows}
    now = timezone.now()
    if not _any_suppressed(domain_ids, addresses, now):
        return rows
    active = {(s.domain_id, s.address): s for s in Suppression.objects.filter(
        domain_id__in=domain_ids, address__in=addresses, expires_at__gt=now)}
    keep = []
    for r in rows:
        suppressed = active.get((r.message.sender_domain_id, r.address.lower()))
        if suppressed:
            record(run, r, Outcome("bounced", f"550 5.7.1 {r.address} is suppressed after a hard bounce "
                                              f"until {suppressed.expires_at:%Y-%m-%d}"))
        else:
            keep.append(r)
    return keep
