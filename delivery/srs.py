"""Sender Rewriting Scheme for forwarded mail.

When mail for a hosted alias is forwarded to another provider, the next hop checks SPF of the
envelope sender's domain against our IP and fails. SRS rewrites the envelope sender to an address
in our own domain that encodes the original (and a hash and a timestamp, so it cannot be abused
as an open bounce relay), and bounces to it are turned back into the original sender.

Format (Shevek's SRS, as postsrsd and Exim use it):
  SRS0=HHHH=TT=orig-domain=orig-local@SRS_DOMAIN
  SRS1=HHHH=first-forwarder-domain==SRS0-rest@SRS_DOMAIN   (re-forwarding an SRS0 address)
HHHH: HMAC-SHA256 of the rest, URL-safe base64 (no '/' or '+'), 4 characters; TT: days since epoch mod 1024, base32.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.conf import settings

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
MAX_AGE_DAYS = 21


def _secret() -> bytes:
    return (getattr(settings, "SRS_SECRET", "") or settings.SECRET_KEY).encode()


def _domain() -> str:
    return getattr(settings, "SRS_DOMAIN", "") or settings.MAIL_HOSTNAME


def _hash(*parts: str) -> str:
    mac = hmac.new(_secret(), "".join(p.lower() for p in parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:4]  # no "/": it is refused in local parts


def _timestamp(now: float | None = None) -> str:
    day = int((now or time.time()) // 86400) % 1024
    return _B32[day >> 5] + _B32[day & 31]


def _age_ok(stamp: str) -> bool:
    try:
        then = (_B32.index(stamp[0].upper()) << 5) | _B32.index(stamp[1].upper())
    except (ValueError, IndexError):
        return False
    today = int(time.time() // 86400) % 1024
    return (today - then) % 1024 <= MAX_AGE_DAYS


def forward(sender: str) -> str:
    """The envelope sender to use when forwarding mail from `sender` ('' stays '')."""
    if not sender or "@" not in sender:
        return sender
    local, _, domain = sender.rpartition("@")
    if domain.lower() == _domain().lower() and local[:5].upper() in ("SRS0=", "SRS1="):
        return sender  # already ours: forwarding twice through this server changes nothing
    if local[:5].upper() == "SRS0=":
        rest = local[4:]  # "=HHHH=TT=domain=local"
        return f"SRS1={_hash(domain, rest)}={domain}={rest}@{_domain()}"
    if local[:5].upper() == "SRS1=":
        head, _, rest = local[5:].partition("==")
        first = head.split("=", 1)[-1]
        return f"SRS1={_hash(first, '=' + rest)}={first}=={rest}@{_domain()}"
    stamp = _timestamp()
    return f"SRS0={_hash(stamp, domain, local)}={stamp}={domain}={local}@{_domain()}"


def reverse(address: str) -> str | None:
    """The original sender an SRS address of ours stands for, or None (not ours, forged, stale)."""
    local, _, domain = address.rpartition("@")
    if domain.lower() != _domain().lower():
        return None
    tag = local[:5].upper()
    if tag == "SRS0=":
        parts = local[5:].split("=", 3)
        if len(parts) != 4:
            return None
        mac, stamp, orig_domain, orig_local = parts
        if not hmac.compare_digest(mac, _hash(stamp, orig_domain, orig_local)) or not _age_ok(stamp):
            return None
        return f"{orig_local}@{orig_domain}"
    if tag == "SRS1=":
        mac, _, rest = local[5:].partition("=")
        first, _, srs0_rest = rest.partition("==")
        if not hmac.compare_digest(mac, _hash(first, "=" + srs0_rest)):
            return None
        return f"SRS0={srs0_rest}@{first}"
    return None
