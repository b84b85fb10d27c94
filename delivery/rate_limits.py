"""Hourly sending limits of relay credentials and app passwords (`rate_limit_per_hour`).

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

from django.core.cache import cache

WINDOW = 3600


def take(credential_id: int, limit: int, now: float | None = None) -> bool:
    """Count one recipient against the credential's hourly limit; False (nothing counted) when
    it would go over."""
    now = time.time() if now is None else now
    bucket = int(now // WINDOW)
    current = f"send-rate:{credential_id}:{bucket}"
    previous = f"send-rate:{credential_id}:{bucket - 1}"
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
