"""Hourly sending limits: of a relay credential or app password (`rate_limit_per_hour`), of a
mailbox over its password and app passwords, and of a whole domain (`send_limit_per_hour`).

A submission is counted against every limit that covers it, each its own counter: an app
password against its own, its mailbox's and its domain's. The first one that would go over
refuses the recipient, and what the others had counted for it is given back.

Counted in recipients, not messages: a message to three people counts three, so a leaked
web-shop credential cannot send one message to a thousand addresses instead of a thousand
messages. A recipient counts when RCPT accepts it, before the message is sent: a client over
its limit hears `451 4.7.1` at once and keeps the rest of its mail to send later, nothing is
lost.

The hour slides: the count is this clock hour's plus the previous hour's weighted by the share
of it still inside the last sixty minutes (the sliding-window counter of Cloudflare's and
nginx's limiters): two cache keys per credential instead of a timestamp per recipient. State
lives in Django's cache (CACHE_URL) like AUTH throttling: per process by default, shared
through Redis when several copies of the SMTP service run; a restart forgets it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache

WINDOW = 3600


@dataclass(frozen=True)
class SendLimit:
    counter: str    # "credential:12", "mailbox:3", "domain:1"
    per_hour: int
    holder: str     # who the refusal names: "this login", "this mailbox", "domain example.org"


def take_all(limits: tuple[SendLimit, ...], now: float | None = None) -> SendLimit | None:
    """Count one recipient against each limit; the limit that refused it (nothing stays
    counted), or None."""
    now = time.time() if now is None else now
    for n, limit in enumerate(limits):
        if not take(limit.counter, limit.per_hour, now):
            for taken in limits[:n]:
                cache.decr(_key(taken.counter, now))
            return limit
    return None


def _key(counter: int | str, now: float, hours_ago: int = 0) -> str:
    return f"send-rate:{counter}:{int(now // WINDOW) - hours_ago}"


def take(counter: int | str, limit: int, now: float | None = None) -> bool:
    """Count one recipient against one hourly limit; False (nothing counted) when it would go
    over."""
    now = time.time() if now is None else now
    current, previous = _key(counter, now), _key(counter, now, hours_ago=1)
    # Counted first and taken back when over: two sessions of one credential at the limit
    # cannot both pass between a read and a write.
    if cache.add(current, 1, 2 * WINDOW):
        count = 1
    else:
        try:
            count = cache.incr(current)
        except ValueError:  # expired between add and incr
            cache.set(current, 1, 2 * WINDOW)
            count = 1
    still_inside = 1 - (now % WINDOW) / WINDOW
    if count + cache.get(previous, 0) * still_inside > limit:
        cache.decr(current)
        return False
    return True
