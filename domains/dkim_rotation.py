"""DKIM rotation with overlap: a new key is published as `pending`, signs only once DNS shows it,
and the old key stays published (no longer signing) until an admin retires it.

Activation asks DNS itself, through the resolvers in settings.DNS_RESOLVERS, for the selector's
TXT record and compares the `p=` value exactly: a key that signs before receivers can fetch it
makes every message fail DKIM.
"""

from __future__ import annotations

import dns.exception
import dns.resolver
from django.core.exceptions import ValidationError

from mailhost.resolvers import configured_resolver

from .dns_checks import tags
from .models import DkimKey


def published_value(key: DkimKey) -> str:
    """The TXT value DNS returns for the key's selector; ValidationError says what went wrong."""
    try:
        answer = configured_resolver(lifetime=5).resolve(key.dns_name, "TXT")
    except dns.resolver.NXDOMAIN as exc:
        raise ValidationError(f"{key.dns_name} does not exist in DNS yet") from exc
    except dns.resolver.NoAnswer as exc:
        raise ValidationError(f"{key.dns_name} has no TXT record yet") from exc
    except (dns.exception.DNSException, OSError) as exc:
        raise ValidationError(f"DNS lookup of {key.dns_name} failed ({exc}); try again") from exc
    values = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    for value in values:
        if "".join(tags(value).get("p", "").split()) == key.public_key:
            return value
    raise ValidationError(f"{key.dns_name} is published but does not carry this key's public key "
                          f"(found {values[0][:80]!r}…)")


def activate(key: DkimKey) -> None:
    if key.state != DkimKey.State.PENDING:
        raise ValidationError("only a pending key can be activated")
    published_value(key)
    key.activate()


def retire(key: DkimKey) -> None:
    signing = key.domain.active_dkim_key()
    if signing is not None and signing.pk == key.pk:
        raise ValidationError("this key signs the domain's mail; activate a new key before retiring it")
    if key.state == DkimKey.State.RETIRED:
        raise ValidationError("this key is already retired")
    key.retire()
