"""DNS resolvers on DNS_RESOLVERS: the one place that turns the setting into a dnspython resolver.

Every lookup the platform makes (the wizard, DKIM rotation, outbound MX routing, inbound SPF/DKIM/
DMARC through pyspf and dkimpy) goes through here, so pointing DNS_RESOLVERS at a server moves
all of them, each `ip:port` entry with its own port.
"""

from __future__ import annotations

import dns.nameserver
import dns.resolver
from django.conf import settings


def configured_resolver(*, lifetime: float = 10.0, timeout: float | None = None,
                        cache: dns.resolver.LRUCache | None = None) -> dns.resolver.Resolver:
    """A resolver on DNS_RESOLVERS, or the system's when that is empty.

    No cache unless one is given: dnspython keeps none by default, which is what "check now"
    needs; hot paths (MX routing, inbound sender checks) pass a TTL-respecting LRU cache.
    """
    if settings.DNS_RESOLVERS:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in settings.DNS_RESOLVERS]
    else:
        res = dns.resolver.Resolver()
    res.cache = cache
    res.lifetime = lifetime
    res.timeout = min(timeout if timeout is not None else 2.0, lifetime)
    return res


def install_default(*, lifetime: float = 10.0, cache: dns.resolver.LRUCache | None = None) -> None:
    """Make the configured resolver dnspython's default: pyspf and dkimpy resolve through it."""
    dns.resolver.default_resolver = configured_resolver(lifetime=lifetime, cache=cache)
