"""The SMTP service on aiosmtpd: one event loop, three listeners (MX 25, submission 587, 465).

The handler implements aiosmtpd's handle_* hooks only; each calls plain functions in
smtp_policy, smtp_auth and smtp_transaction, and anything touching the database or DNS runs in
a worker thread so one slow lookup never stalls the other sessions. `MailSMTP` adds what
aiosmtpd lacks (FIELD-NOTES): a connection cap per client address and in total, a DATA timeout
that a slow but moving upload does not trip, and enhanced status codes on aiosmtpd's own replies.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiosmtpd.smtp import MISSING, SMTP, Envelope, TLSSetupException
from django.conf import settings
from django.db import connections

from mailhost.threads import name_native_thread

from . import db_writes, listening, rate_limits, replies, sender_checks, smtp_auth, smtp_policy, smtp_transaction, tls

log = logging.getLogger("mailhost.smtp")
# `<dot-atom@dot-atom>`: nearly every MAIL and RCPT argument. aiosmtpd runs each through the
# email package's header parser (a tenth of the service's CPU under load); this shape parses to
# the same address and rest, and anything else still takes aiosmtpd's path.
_PLAIN_PATH = re.compile(r"<((?:[A-Za-z0-9_+=-]+(?:\.[A-Za-z0-9_+=-]+)*)@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


@dataclass(frozen=True)
class Listener:
    name: str            # inbound / submission / submissions
    host: str
    port: int

    @property
    def submission(self) -> bool:
        return self.name != "inbound"

    @property
    def implicit_tls(self) -> bool:
        return self.name == "submissions"


class ConnectionLimiter:
    """Concurrent connections per client address and in total, for this process."""

    def __init__(self, per_ip: int, total: int):
        self.per_ip, self.total = per_ip, total
        self.counts: Counter[str] = Counter()
        self.open = 0

    def acquire(self, ip: str) -> str | None:
        if self.open >= self.total:
            return replies.SERVER_BUSY
        if self.counts[ip] >= self.per_ip:
            return replies.TOO_MANY_CONNECTIONS
        self.counts[ip] += 1
        self.open += 1
        return None

    def release(self, ip: str) -> None:
        self.counts[ip] -= 1
        self.open -= 1
        if self.counts[ip] <= 0:
            del self.counts[ip]


def thread(fn, *args, **kwargs):
    """Run database or DNS work in the worker pool, off the event loop."""
    return asyncio.get_running_loop().run_in_executor(None, functools.partial(_with_fresh_connection, fn,
                                                                              *args, **kwargs))


def _with_fresh_connection(fn, *args, **kwargs):
    # Worker threads keep their connection like a request would: dropped when broken or older
    # than CONN_MAX_AGE, so a database restart costs one failed transaction, not every one.
    db_writes.refresh_connection()
    return fn(*args, **kwargs)


class MailHandler:
    def __init__(self, listener: Listener):
        self.listener = listener

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return ehlo_lines(responses, offer_auth=self.listener.submission)

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_AUTH(self, server, session, envelope, args):
        if not self.listener.submission:
            return replies.AUTH_NOT_ON_MX
        return await smtp_auth.authenticate(server, session, args)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.listener.submission:
            reply = smtp_policy.submission_sender_reply(address, session.auth_data, without_database=True)
            if reply is None:
                reply = await thread(smtp_policy.submission_sender_reply, address, session.auth_data)
        else:
            reply = smtp_policy.inbound_sender_reply(address)
        if reply == replies.SENDER_OK:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            envelope.tx = server.new_transaction(address)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if smtp_policy.too_many_recipients(len(envelope.rcpt_tos), settings.SMTP_MAX_RECIPIENTS):
            return replies.TOO_MANY_RECIPIENTS
        authenticated = self.listener.submission and session.authenticated
        decision = smtp_policy.cached_rcpt_decision(address, authenticated=authenticated)
        if decision is None:    # e.g. a new remote address in a domain known not to be hosted
            decision = smtp_policy.rcpt_decision(address, authenticated=authenticated, without_database=True)
        if decision is None:
            decision = await thread(smtp_policy.rcpt_decision, address, authenticated=authenticated)
            smtp_policy.remember_rcpt_decision(address, decision, authenticated=authenticated)
        if decision.accepted and authenticated and session.auth_data.limits:
            identity = session.auth_data
            over = await thread(rate_limits.take_all, identity.limits)
            if over is not None:
                log.warning("rate limit login=%r limit=%d/h of %s rcpt refused", identity.login, over.per_hour,
                            over.holder)
                return replies.rate_limited(over.per_hour, over.holder)
        if decision.accepted:
            envelope.rcpt_tos.append(address)
            envelope.tx.add_recipient(address, decision)
        else:
            await thread(smtp_transaction.record_refused_rcpt, envelope.tx, address, decision)
        return decision.reply

    async def handle_DATA(self, server, session, envelope):
        return await thread(smtp_transaction.finish, envelope.tx, envelope.original_content, session.auth_data)

    async def handle_exception(self, error):
        log.exception("smtp session error: %r", error)
        return replies.LOCAL_ERROR


def ehlo_lines(responses: list[str], *, offer_auth: bool) -> list[str]:
    """aiosmtpd's EHLO keywords plus PIPELINING and ENHANCEDSTATUSCODES; no AUTH on the MX."""
    lines = [line for line in responses[:-1] if offer_auth or not line.startswith("250-AUTH")]
    return lines + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]


class _TlsLayer:
    """What aiosmtpd reads of its TLS protocol object: truthy once TLS is on, and the
    connection's TLS details as `session.ssl`."""

    def __init__(self, transport):
        self._extra = {name: transport.get_extra_info(name)
                       for name in ("sslcontext", "ssl_object", "peercert", "cipher", "compression")}


class MailSMTP(SMTP):
    def __init__(self, handler: MailHandler, *, limiter: ConnectionLimiter, data_timeout: float,
                 active: set, closed=None, **kwargs):
        super().__init__(handler, **kwargs)
        self.listener = handler.listener
        self.limiter = limiter
        self._uncount = closed      # tells listening.Balance that this connection is over
        self.data_timeout = data_timeout
        self.active = active
        self._limit_reply: str | None = None
        self._counted_ip: str | None = None
        self._in_data = False
        self._in_hook = 0
        self._last_bytes_at = 0.0

    @property
    def busy(self) -> bool:
        """Mid-transaction: receiving DATA or running a hook (which may be storing mail)."""
        return self._in_data or self._in_hook > 0

    def close_with(self, reply: str) -> None:
        if self.transport is not None:
            self.transport.write((reply + "\r\n").encode())
            self.transport.close()

    async def _call_handler_hook(self, command: str, *args):
        self._in_hook += 1
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._in_hook -= 1

    def _create_envelope(self) -> Envelope:
        envelope = Envelope()
        envelope.tx = None
        return envelope

    def _getaddr(self, arg: str):
        match = _PLAIN_PATH.match(arg)
        rest = arg[match.end():] if match else "("
        if "(" in rest:     # no match, or a comment after the path: the parser's rules apply
            return SMTP._getaddr(self, arg)
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest.lstrip(" \t")

    @staticmethod
    def thread(fn, *args, **kwargs):
        return thread(fn, *args, **kwargs)

    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS, with TLS layered on by the event loop's own `start_tls`.

        aiosmtpd builds asyncio's pure-Python TLS protocol by hand, a quarter of the event
        loop's time under load; the loop's own layer is compiled under uvloop. What follows
        the handshake is aiosmtpd's: `connection_made` on the TLS transport starts a new
        session (EHLO again, no AUTH carried over) and drops any plaintext the client sent
        after STARTTLS (RFC 3207 4.2); bytes still unread on the socket become part of the
        handshake, which then fails."""
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if self._tls_protocol is not None:
            await self.push(replies.TLS_ALREADY_ACTIVE)
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        plain = self.transport
        try:
            secured = await self.loop.start_tls(plain, self, self.tls_context, server_side=True)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error
        self._tls_protocol = _TlsLayer(secured)
        self._original_transport = plain
        self.connection_made(secured)

    def eof_received(self) -> bool:
        """aiosmtpd ends the session at the client's EOF but leaves the connection half open,
        and when the EOF comes before the session's first step nothing ever closes it: it kept
        its place under SMTP_MAX_CONNECTIONS_PER_IP for good. Closed here."""
        super().eof_received()
        return False

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the message in whole chunks instead of line by line.

        aiosmtpd awaits readuntil(CRLF) once per line: a sixth of the service's CPU for 4 KiB
        messages. Here the stream's buffer is searched for CRLF.CRLF, which is the only thing
        that ends DATA either way (a bare LF before the dot is not a line start: no smuggling).
        The limits, the dot-unstuffing and the replies are aiosmtpd's. Where asyncio's
        StreamReader lacks the internals this needs, aiosmtpd's own loop runs.
        """
        reader = self._reader
        if not all(hasattr(reader, name) for name in ("_buffer", "_wait_for_data", "_limit", "_eof")):
            return await super().smtp_DATA(arg)
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        raw, problem = await self._read_message(reader)
        if raw is None:     # the client went away mid-message
            return
        if problem is None and max(map(len, raw.split(b"\r\n"))) > self.line_length_limit - 2:
            problem = replies.LINE_TOO_LONG
        if problem is not None:
            await self.push(problem)
            self._set_post_data_state()
            return
        content = (raw[1:] if raw[:1] == b"." else raw).replace(b"\r\n.", b"\r\n")
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_message(self, reader) -> tuple[bytes | None, str | None]:
        """(the dot-stuffed message without its final `.CRLF`, None); (b"", refusal) once an
        oversized message has been drained; (None, None) when the connection ends first."""
        buffer: bytearray = reader._buffer
        size_limit = self.data_size_limit
        saved_limit = reader._limit
        reader._limit = max(saved_limit, 1 << 20)   # don't pause the socket for every 2 KiB
        searched, too_big = 0, False
        try:
            while True:
                if not too_big and buffer[:3] == b".\r\n":     # an empty message
                    del buffer[:3]
                    return b"", None
                end = buffer.find(b"\r\n.\r\n", searched)
                if end >= 0:
                    raw = bytes(buffer[:end + 2])
                    del buffer[:end + 5]
                    if too_big or (size_limit and len(raw) > size_limit):
                        return b"", replies.MESSAGE_TOO_BIG
                    return raw, None
                searched = max(0, len(buffer) - 4)      # CRLF.CRLF may straddle the next chunk
                if size_limit and len(buffer) > size_limit + 5:
                    # Too much: keep only what may hold the start of CRLF.CRLF and go on draining.
                    del buffer[:searched]
                    searched, too_big = 0, True
                if reader._exception is not None or reader._eof:
                    return None, None
                await reader._wait_for_data("smtp_DATA")
        finally:
            reader._limit = saved_limit
            reader._maybe_resume_transport()

    def new_transaction(self, mail_from: str) -> smtp_transaction.Transaction:
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        identity = self.session.auth_data if self.session.authenticated else None
        return smtp_transaction.Transaction(
            submission=self.listener.submission, client_ip=str(self.session.peer[0]),
            helo=smtp_policy.clean_text(self.session.host_name or ""), tls=smtp_transaction.tls_description(ssl_object),
            auth_user=identity.login if identity else "", mail_from=mail_from)

    def connection_made(self, transport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            ip = str(self.session.peer[0])
            self._limit_reply = self.limiter.acquire(ip)
            self._counted_ip = None if self._limit_reply else ip
            self.active.add(self)

    def connection_lost(self, error) -> None:
        if self._counted_ip is not None:
            self.limiter.release(self._counted_ip)
            self._counted_ip = None
        self.active.discard(self)
        if self._uncount is not None:
            self._uncount()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._limit_reply:
            log.warning("connection refused client=%s reply=%r", self.session.peer[0], self._limit_reply)
            await self.push(self._limit_reply)
            self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status) -> None:
        if isinstance(status, str):
            status = replies.translate(status)
            self._in_data = status.startswith("354")
        await super().push(status)

    def data_received(self, data: bytes) -> None:
        self._last_bytes_at = self.loop.time()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        """aiosmtpd arms one timer per command; while DATA bytes keep arriving we extend it."""
        idle = self.loop.time() - self._last_bytes_at
        if self._in_data and idle < self.data_timeout:
            self._reset_timeout(self.data_timeout - idle)
            return
        if self.transport is not None:
            self.transport.write((replies.TIMEOUT + "\r\n").encode())
        super()._timeout_cb()


def run_loop(main) -> None:
    """Run the service's coroutine on uvloop: its transports, timers and TLS are compiled, where
    asyncio's TLS and much of its transport code are Python. asyncio's loop when uvloop is
    missing (it builds on Linux and macOS only)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def keep_database_connections() -> None:
    """Worker threads keep their database connection between calls. With SQLite's default
    CONN_MAX_AGE of 0 every call would reconnect (and rerun the WAL pragmas): a tenth of the
    service's time under load."""
    db = settings.DATABASES["default"]
    if not db.get("CONN_MAX_AGE"):
        db["CONN_MAX_AGE"] = 600
        for connection in connections.all(initialized_only=True):
            connection.settings_dict["CONN_MAX_AGE"] = 600


def warm_up() -> None:
    """Pay before listening what the first login and the first message of every process paid
    while a client waited: the modules the DATA path imports on first use (the Celery app's
    tasks, dkimpy, OpenSSL's bindings), building the Celery app's task registry, and loading
    the default password hasher's library. On a slow box the first login took 75 ms and the
    first message 105 ms (the next ones 24 ms, argon2 itself, and 8 ms); after this, 50 and
    35. Nothing here opens a connection: a broker that is down must not keep the service from
    starting (mail is still queued, and the beat sweep finds it)."""
    from django.contrib.auth.hashers import get_hasher

    from mailhost.celery import app

    from . import signing, srs, storage, tasks  # noqa: F401 - imported for their import time

    app.finalize(auto=True)
    hasher = get_hasher()
    if getattr(hasher, "library", None):
        hasher._load_library()


async def serve(listeners: list[Listener], *, ready=None, sockets: dict[str, list] | None = None,
                balance: listening.Balance | None = None) -> None:
    """Run until SIGTERM or SIGINT; then stop accepting, let sessions finish briefly, close.

    `sockets` (listener name -> its bound sockets) and `balance`: given by `runsmtp --processes`,
    whose copies share them (delivery/listening.py); a lone service binds its own.
    """
    if sockets is None:
        # Warm up before binding: a client connecting meanwhile would wait in the backlog.
        # (runsmtp --processes warms up in the parent, before it binds and forks.)
        warm_up()
        sockets = {listener.name: listening.bind(listener.host, listener.port) for listener in listeners}
    loop = asyncio.get_running_loop()
    keep_database_connections()
    executor = ThreadPoolExecutor(max_workers=settings.SMTP_WORKER_THREADS, thread_name_prefix="smtp-work",
                                  initializer=name_native_thread)
    loop.set_default_executor(executor)
    db_writes.start()
    sender_checks.use_configured_resolvers()
    context = tls.server_context()
    limiter = ConnectionLimiter(settings.SMTP_MAX_CONNECTIONS_PER_IP, settings.SMTP_MAX_CONNECTIONS)
    active: set[MailSMTP] = set()
    acceptors = []
    for listener in listeners:
        factory = functools.partial(_protocol, listener, context, limiter, active, loop)
        for sock in sockets[listener.name]:
            acceptors.append(listening.Acceptor(loop, sock, factory, balance=balance,
                                                ssl=context if listener.implicit_tls else None))
        log.info("listening listener=%s address=[%s]:%d", listener.name, listener.host, listener.port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready()
    await stop.wait()
    log.info("stopping: no new connections, %d open", len(active))
    for acceptor in acceptors:
        acceptor.close()
    deadline = loop.time() + settings.SMTP_SHUTDOWN_GRACE
    while True:
        for protocol in list(active):
            if not protocol.busy or loop.time() >= deadline:
                protocol.close_with(replies.SHUTTING_DOWN)
                active.discard(protocol)
        if not active:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0)
    executor.shutdown(wait=True)
    db_writes.stop()
    log.info("stopped")


def _protocol(listener: Listener, context, limiter, active, loop, closed=None) -> MailSMTP:
    return MailSMTP(
        MailHandler(listener), limiter=limiter, active=active, loop=loop, closed=closed,
        data_timeout=settings.SMTP_DATA_TIMEOUT, timeout=settings.SMTP_COMMAND_TIMEOUT,
        hostname=settings.MAIL_HOSTNAME, ident="ESMTP mailhost",
        data_size_limit=settings.SMTP_MAX_MESSAGE_SIZE, enable_SMTPUTF8=True, decode_data=False,
        tls_context=None if listener.implicit_tls else context,
        # On 465 the socket is TLS from the first byte, so AUTH may (must) be offered at once
        # (aiosmtpd #281); elsewhere only after STARTTLS.
        auth_require_tls=not listener.implicit_tls,
    )
