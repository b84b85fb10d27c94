"""SMTP AUTH (PLAIN, LOGIN) against mailbox passwords and relay credentials, with throttling.

Verification runs in a worker thread: an argon2 check costs ~20 ms of CPU and must never stall
other sessions on the event loop. Successful verifications are remembered for a few minutes
under an HMAC of (login, password, stored hash), so a client that logs in for every message does
not pay the hash each time, and a password change invalidates the entry by itself.

Throttling follows what the anchors learned (Mailu #2880, #3094): counting every failure locks
out real users whose phone retries one stale password forever. So we count *distinct* failures:
distinct (login, password) pairs per client network (/24 for IPv4, /48 for IPv6) and distinct
wrong passwords per account. Over SMTP_AUTH_MAX_FAILURES within SMTP_AUTH_WINDOW seconds,
AUTH answers 454 4.7.0 without checking anything. A client address that logged in successfully
within the last hour is exempt. Loopback is not: a proxy in front of us would otherwise make
every attacker "local".

State lives in Django's cache framework (CACHE_URL): per-process memory by default, which is
right for one service process; set CACHE_URL to Redis when several copies run, and they share
the counters. A database table would also be shared, but would put a write on the primary for
every failed guess of a brute-force run; Redis is the scale-out path DESIGN.md names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import MISSING
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from domains.models import Domain
from mailboxes.models import Mailbox, RelayCredential, User
from mailhost.addresses import AddressError, normalize_address

from . import replies
from .rate_limits import SendLimit

log = logging.getLogger("mailhost.smtp.auth")

SUCCESS_CACHE_SECONDS = 300
EXEMPT_SECONDS = 3600
# A session asks "may this login send as X?" at MAIL FROM and again for the From: header of the
# same message: two queries each (mailbox, then aliases by substring). The answer is kept for
# this long per session, so a revoked credential or a removed alias binds within seconds.
SEND_AS_CACHE_SECONDS = 10


@dataclass(frozen=True)
class Identity:
    """Who logged in: a mailbox (by password or app password) or a domain relay credential."""

    login: str
    mailbox_id: int | None = None
    credential_id: int | None = None
    limits: tuple[SendLimit, ...] = ()  # every hourly sending limit over this login (delivery/rate_limits.py)
    _send_as: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def can_send_as(self, address: str) -> bool:
        """Database work: call from a thread."""
        key = address.lower()
        now = time.monotonic()
        known = self._send_as.get(key)
        if known is not None and now - known[0] < SEND_AS_CACHE_SECONDS:
            return known[1]
        allowed = self._can_send_as(address)
        self._send_as[key] = (now, allowed)
        return allowed

    def remembered_send_as(self, address: str) -> bool | None:
        """can_send_as without the database: the session's answer if it is fresh, else None."""
        known = self._send_as.get(address.lower())
        if known is not None and time.monotonic() - known[0] < SEND_AS_CACHE_SECONDS:
            return known[1]
        return None

    def _can_send_as(self, address: str) -> bool:
        if self.credential_id is not None:
            cred = RelayCredential.objects.select_related("mailbox__domain", "domain").filter(
                pk=self.credential_id, revoked_at__isnull=True).first()
            return cred is not None and cred.is_active and cred.can_send_as(address)
        mailbox = Mailbox.objects.select_related("domain").filter(pk=self.mailbox_id).first()
        return mailbox is not None and mailbox.can_send_as(address)


# -- reading the credentials from the client (async: they arrive on the socket) ------------------

async def read_credentials(server, args: list[str]) -> tuple[str, str] | None:
    """Run the PLAIN or LOGIN exchange; None when the client aborted (reply already sent)."""
    mechanism = args[0].upper()
    if mechanism == "PLAIN":
        blob = await _initial_or_challenge(server, args, "")
        if blob is None:
            return None
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push(replies.AUTH_BAD_PLAIN)
            return None
        return _text(parts[1]), _text(parts[2])
    login = await _initial_or_challenge(server, args, server.AuthLoginUsernameChallenge)
    if login is None:
        return None
    password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
    if password is MISSING:
        return None
    return _text(login), _text(password)


async def _initial_or_challenge(server, args: list[str], challenge: str) -> bytes | None:
    if len(args) == 1:
        blob = await server.challenge_auth(challenge)
        return None if blob is MISSING else blob
    try:
        return base64.b64decode(args[1].encode(), validate=True)
    except (binascii.Error, ValueError):
        await server.push(replies.AUTH_BAD_BASE64)
        return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


async def authenticate(server, session, args: list[str]) -> str | None:
    """The whole AUTH command after aiosmtpd checked TLS and the mechanism name."""
    client_ip = session.peer[0]
    if await server.thread(is_throttled, client_ip):
        log.warning("auth throttled client=%s", client_ip)
        return replies.AUTH_THROTTLED
    credentials = await read_credentials(server, args)
    if credentials is None:
        return None
    login, password = credentials
    reply, identity = await server.thread(check_login, login, password, client_ip)
    if identity is not None:
        session.authenticated = True
        session.auth_data = identity
    log.info("auth client=%s login=%r result=%s", client_ip, login, reply[:3])
    return reply


# -- verification (sync: database and hashing, run in a thread) ---------------------------------

def check_login(login: str, password: str, client_ip: str) -> tuple[str, Identity | None]:
    if is_throttled(client_ip, login):
        return replies.AUTH_THROTTLED, None
    identity = verify(login, password)
    if identity is None:
        record_failure(client_ip, login, password)
        return replies.AUTH_FAILED, None
    record_success(client_ip)
    return replies.AUTH_OK, identity


def verify(login: str, password: str) -> Identity | None:
    """The identity these credentials prove, or None. Mailbox password first, then credentials."""
    try:
        name = normalize_address(login)
    except AddressError:
        name = login.strip().lower()
    if not password or not name:
        return None
    user = User.objects.select_related("mailbox__domain").filter(username=name, is_active=True).first()
    mailbox = getattr(user, "mailbox", None) if user else None
    if mailbox is not None and mailbox.can_receive and user.password:
        if _remembered_or_checked(name, password, user.password, user.check_password):
            return Identity(login=name, mailbox_id=mailbox.pk, limits=send_limits(None, mailbox, mailbox.domain))
    credentials = RelayCredential.objects.select_related("domain", "mailbox__domain", "mailbox__user").filter(
        revoked_at__isnull=True)
    for cred in list(credentials.filter(login=name)) + list(credentials.filter(mailbox__user__username=name)):
        if cred.is_active and _remembered_or_checked(name, password, cred.secret_hash, cred.check_secret):
            RelayCredential.objects.filter(pk=cred.pk).update(last_used_at=timezone.now())
            domain = cred.mailbox.domain if cred.mailbox_id else cred.domain
            return Identity(login=name, mailbox_id=cred.mailbox_id, credential_id=cred.pk,
                            limits=send_limits(cred, cred.mailbox, domain))
    return None


def send_limits(cred: RelayCredential | None, mailbox: Mailbox | None, domain: Domain | None) -> tuple:
    """The limits a login sends under, narrowest first, as they stand when it logs in."""
    limits = []
    if cred is not None and cred.rate_limit_per_hour:
        limits.append(SendLimit(f"credential:{cred.pk}", cred.rate_limit_per_hour, "this login"))
    if mailbox is not None and mailbox.send_limit_per_hour:
        limits.append(SendLimit(f"mailbox:{mailbox.pk}", mailbox.send_limit_per_hour, "this mailbox"))
    if domain is not None and domain.send_limit_per_hour:
        limits.append(SendLimit(f"domain:{domain.pk}", domain.send_limit_per_hour, f"domain {domain.name}"))
    return tuple(limits)


def _remembered_or_checked(login: str, password: str, stored: str, check) -> bool:
    key = "smtp-auth-ok:" + _fingerprint(login, password, stored)
    if cache.get(key):
        return True
    if check(password):
        cache.set(key, True, SUCCESS_CACHE_SECONDS)
        return True
    return False


def _fingerprint(*parts: str) -> str:
    message = "\x00".join(parts).encode("utf-8", errors="surrogatepass")
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


# -- throttling ----------------------------------------------------------------------------------

def client_network(client_ip: str) -> str:
    address = ipaddress.ip_address(client_ip)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _recent(entries: dict[str, float]) -> dict[str, float]:
    horizon = time.time() - settings.SMTP_AUTH_WINDOW
    return {k: t for k, t in entries.items() if t > horizon}


def is_throttled(client_ip: str, login: str | None = None) -> bool:
    if cache.get(f"smtp-auth-exempt:{client_ip}"):
        return False
    limit = settings.SMTP_AUTH_MAX_FAILURES
    if len(_recent(cache.get(f"smtp-auth-net:{client_network(client_ip)}", {}))) >= limit:
        return True
    return bool(login) and len(_recent(cache.get(f"smtp-auth-acct:{_account_key(login)}", {}))) >= limit


def record_failure(client_ip: str, login: str, password: str) -> None:
    now = time.time()
    net_key = f"smtp-auth-net:{client_network(client_ip)}"
    failures = _recent(cache.get(net_key, {}))
    failures[_fingerprint("net", login.lower(), password)] = now
    cache.set(net_key, failures, settings.SMTP_AUTH_WINDOW)
    account_key = f"smtp-auth-acct:{_account_key(login)}"
    wrong = _recent(cache.get(account_key, {}))
    wrong[_fingerprint("acct", password)] = now
    cache.set(account_key, wrong, settings.SMTP_AUTH_WINDOW)
    log.info("auth failure client=%s network=%s distinct_failures=%d", client_ip,
             client_network(client_ip), len(failures))


def record_success(client_ip: str) -> None:
    cache.set(f"smtp-auth-exempt:{client_ip}", True, EXEMPT_SECONDS)


def _account_key(login: str) -> str:
    return _fingerprint("account", login.strip().lower())
