"""Who an address reaches: the one answer used by SMTP RCPT, webmail, forwarding and Dovecot.

Resolution order for `local@domain`: the domain (or its alias domain's target), then subaddress
stripping (`user+tag`), then a mailbox, then an alias, then the catch-all. Aliases expand
recursively with a visited set, so alias loops end instead of spinning; a mailbox's own
forwarding applies after expansion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from delivery import srs
from delivery.short_cache import DirectoryCache
from domains.models import Domain, DomainAlias
from mailhost.addresses import AddressError, parse_address

from .models import Alias, Mailbox

MAX_EXPANSION_DEPTH = 10


class Verdict(Enum):
    DELIVER = "deliver"
    UNKNOWN_USER = "unknown user"        # hosted domain, no such address: 550 5.1.1
    NOT_HOSTED = "not hosted"            # relay attempt: 550 5.7.1
    BAD_ADDRESS = "bad address"          # syntax or routing tricks: 550 5.1.3
    DISABLED = "disabled"                # mailbox or domain suspended: 550 5.2.1


@dataclass
class Resolution:
    verdict: Verdict
    mailboxes: list[Mailbox] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.DELIVER


# Which domain a name is hosted as: asked for every RCPT the SMTP service has not seen within
# SMTP_DIRECTORY_CACHE seconds, and for every destination of an alias, although it changes far
# more rarely than mailboxes do. Kept per domain name for those same seconds, and forgotten at
# once in this process when a Domain or DomainAlias is saved or deleted; another process (the
# web app suspending a domain) reaches the SMTP service within those seconds, as for RCPT.
_hosted = DirectoryCache("directory-hosted", Domain, DomainAlias)
_NOT_KNOWN = object()


# Which names are hosted at all, while there are few enough to hold: one query each
# SMTP_DIRECTORY_CACHE seconds then answers "not hosted" for every other name. A submission
# service's recipients are spread over many remote domains, and each of them had cost two
# queries and a worker-thread round trip per process every few seconds. Forgotten like `_hosted`.
_hosted_names = DirectoryCache("directory-hosted-names", Domain, DomainAlias, max_entries=1)
HOSTED_NAMES_HELD = 20000


def _hosted_name_set() -> frozenset[str] | None:
    """Every domain and active alias domain name; None when there are too many to hold."""
    names = _hosted_names.get("names", _NOT_KNOWN)
    if names is _NOT_KNOWN:
        found = list(Domain.objects.values_list("name", flat=True)[:HOSTED_NAMES_HELD + 1])
        if len(found) <= HOSTED_NAMES_HELD:
            found += DomainAlias.objects.filter(active=True).values_list("name", flat=True)[:HOSTED_NAMES_HELD + 1]
        names = frozenset(found) if len(found) <= HOSTED_NAMES_HELD else None
        _hosted_names.put("names", names)
    return names


def _remembered_hosted_domain(name: str):
    """What hosted_domain_for would answer, from memory alone; _NOT_KNOWN when it must ask."""
    domain = _hosted.get(name, _NOT_KNOWN)
    if domain is _NOT_KNOWN:
        names = _hosted_names.get("names")
        if names is not None and name not in names:
            return None
    return domain


def hosted_domain_for(name: str) -> Domain | None:
    domain = _remembered_hosted_domain(name)
    if domain is _NOT_KNOWN:
        names = _hosted_name_set()
        if names is not None and name not in names:
            domain = None
        else:
            domain = Domain.objects.filter(name=name).first()
            if domain is None:
                alias = DomainAlias.objects.select_related("target").filter(name=name, active=True).first()
                domain = alias.target if alias else None
        _hosted.put(name, domain)
    return domain


def forget_hosted_domains() -> None:
    _hosted.clear()
    _hosted_names.clear()


def is_hosted(name: str) -> bool:
    return hosted_domain_for(name) is not None


def resolve(address: str, *, without_database: bool = False) -> Resolution | None:
    """Who `address` reaches. `without_database`: answer only when no query is needed (bad
    syntax, or a domain this process's cache knows is not hosted here: the common RCPT of a
    submission), else None; the SMTP service then skips a worker-thread round trip."""
    try:
        addr = parse_address(address)
    except AddressError as exc:
        return Resolution(Verdict.BAD_ADDRESS, reason=str(exc))
    if without_database:
        if _remembered_hosted_domain(addr.domain) is not None or srs.reverse(address.strip().strip("<>")):
            return None
        return Resolution(Verdict.NOT_HOSTED, reason=f"{addr.domain} is not hosted here")
    original = srs.reverse(address.strip().strip("<>"))  # its hash is case-sensitive
    if original is not None:
        # A bounce of mail we forwarded with an SRS sender: it goes back to the original sender
        # (the hash and timestamp stop anyone from using this as an open relay).
        return resolve(original) if is_hosted(parse_address(original).domain) else Resolution(
            Verdict.DELIVER, remote=[original])
    domain = hosted_domain_for(addr.domain)
    if domain is None:
        return Resolution(Verdict.NOT_HOSTED, reason=f"{addr.domain} is not hosted here")
    if not domain.active:
        return Resolution(Verdict.DISABLED, reason=f"{domain.name} is suspended")
    mailboxes: dict[int, Mailbox] = {}
    remote: dict[str, None] = {}
    found = _expand(domain, addr.local, mailboxes, remote, visited=set(), depth=0)
    if not found:
        return Resolution(Verdict.UNKNOWN_USER, reason=f"{addr.local}@{domain.name} does not exist")
    if not mailboxes and not remote:
        return Resolution(Verdict.DISABLED, reason="every destination is disabled")
    return Resolution(Verdict.DELIVER, list(mailboxes.values()), list(remote))


def _expand(domain: Domain, local: str, mailboxes: dict, remote: dict, visited: set,
            depth: int) -> bool:
    """Add what `local@domain` reaches; False when the address does not exist at all."""
    key = f"{local}@{domain.name}"
    if key in visited or depth > MAX_EXPANSION_DEPTH:
        return True
    visited.add(key)
    base = local.split("+", 1)[0] or local
    for candidate in dict.fromkeys((local, base)):
        mailbox = (Mailbox.objects.select_related("domain", "user")
                   .filter(domain=domain, local_part=candidate).first())
        if mailbox is not None:
            _add_mailbox(mailbox, mailboxes, remote, visited, depth)
            return True
        alias = Alias.objects.filter(domain=domain, local_part=candidate, active=True).first()
        if alias is not None:
            _add_destinations(alias.destinations, mailboxes, remote, visited, depth)
            return True
    catch_all = Alias.objects.filter(domain=domain, local_part="", active=True).first()
    if catch_all is not None:
        _add_destinations(catch_all.destinations, mailboxes, remote, visited, depth)
        return True
    return False


def _add_mailbox(mailbox: Mailbox, mailboxes: dict, remote: dict, visited: set, depth: int) -> None:
    if not mailbox.can_receive:
        return
    if mailbox.forward_to:
        _add_destinations(mailbox.forward_to, mailboxes, remote, visited | {mailbox.address}, depth)
        if not mailbox.forward_keep_copy:
            return
    mailboxes[mailbox.pk] = mailbox


def _add_destinations(destinations: list[str], mailboxes: dict, remote: dict, visited: set,
                      depth: int) -> None:
    for dest in destinations:
        try:
            addr = parse_address(dest)
        except AddressError:
            continue
        target = hosted_domain_for(addr.domain)
        if target is None:
            remote[str(addr)] = None
        elif target.active:
            _expand(target, addr.local, mailboxes, remote, visited, depth + 1)
