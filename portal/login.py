"""The login process: throttle, password, then (for admins who enabled it) a TOTP code.

An admin with a confirmed TOTP device is not logged in after the password: the session only
remembers who is half-way, and `login()` happens after the code checks out.
"""

from __future__ import annotations

import django_otp
from django.contrib.auth import authenticate, login
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from mailhost.addresses import AddressError, normalize_address

from . import throttle
from .audit import client_ip, record

PENDING_KEY = "portal_otp_pending_user"
BACKEND = "mailboxes.backends.MailAccountBackend"


def login_key(username: str) -> str:
    """The account name as throttling counts it: one bucket however the address is typed."""
    username = username.strip()
    if "@" in username:
        try:
            return normalize_address(username)
        except AddressError:
            return username.lower()
    return username


def confirmed_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).first()


def attempt(request: HttpRequest, username: str, password: str) -> tuple[str, object]:
    """Returns ("blocked"|"failed"|"otp"|"ok", message-or-user)."""
    key = login_key(username)
    verdict = throttle.check(key, client_ip(request))
    if verdict.blocked:
        return "blocked", verdict.reason
    user = authenticate(request, username=key, password=password)
    if user is None:
        throttle.record_failure(key, password, client_ip(request))
        return "failed", "Wrong mail address, account name or password."
    throttle.clear(key)
    if user.is_domain_admin and confirmed_device(user):
        request.session[PENDING_KEY] = user.pk
        return "otp", user
    finish(request, user)
    return "ok", user


def finish(request: HttpRequest, user, device=None) -> None:
    login(request, user, backend=BACKEND)
    if device is not None:
        django_otp.login(request, device)
    if user.is_domain_admin:
        record(request, "login", user)


def verify(request: HttpRequest, user, token: str) -> tuple[str, str]:
    key = login_key(user.get_username())
    verdict = throttle.check(key, client_ip(request))
    if verdict.blocked:
        return "blocked", verdict.reason
    device = confirmed_device(user)
    if device is not None and not device.verify_is_allowed()[0]:
        return "failed", "Too many wrong codes in a row: wait a few seconds, then enter the current code."
    if device is None or not device.verify_token(token):
        throttle.record_failure(key, "otp:" + token, client_ip(request))
        return "failed", "That code is not right (or already used). Try the current one."
    request.session.pop(PENDING_KEY, None)
    finish(request, user, device)
    return "ok", ""
