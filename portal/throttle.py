"""Throttling failed portal logins, per account and per client network.

Per account we count *distinct* wrong passwords, so a client stuck on one stale password does
not lock its owner out (Mailu #2880); per network (/24 for IPv4, /48 for IPv6) we count every
failure, which stops one host spraying many accounts. A successful login clears its account.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import LoginFailure


def network_of(ip: str | None) -> str:
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return "unknown"
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def _digest(username: str, password: str) -> str:
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"{username}\0{password}".encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    reason: str = ""


def _window_start():
    return timezone.now() - timedelta(seconds=settings.PORTAL_LOGIN_WINDOW)


def check(username: str, ip: str | None) -> Verdict:
    since = _window_start()
    minutes = max(1, settings.PORTAL_LOGIN_WINDOW // 60)
    recent = LoginFailure.objects.filter(created_at__gte=since)
    if recent.filter(network=network_of(ip)).count() >= settings.PORTAL_LOGIN_MAX_NETWORK_FAILURES:
        return Verdict(True, f"Too many failed logins from your network. Try again in {minutes} minutes.")
    distinct = recent.filter(username=username).values("password_digest").distinct().count()
    if username and distinct >= settings.PORTAL_LOGIN_MAX_FAILURES:
        return Verdict(True, f"Too many failed logins for this account. Try again in {minutes} minutes.")
    return Verdict(False)


def record_failure(username: str, password: str, ip: str | None) -> None:
    LoginFailure.objects.create(username=username, network=network_of(ip),
                                password_digest=_digest(username, password))
    LoginFailure.objects.filter(created_at__lt=_window_start()).delete()


def clear(username: str) -> None:
    LoginFailure.objects.filter(username=username).delete()
