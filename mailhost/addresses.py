"""Addresses and domain names: the one place that decides what is acceptable.

Every entry point (commands, portal forms, API, SMTP envelope, Dovecot lookups) normalises
through here, so a name stored in the database, a Maildir path and an SMTP lookup agree.
Anything that could escape a path or a header, or that carries mail-routing syntax
(`%`, `!`, `@`, source routes, quoted strings), is refused with a message naming the problem:
these are the tricks open-relay probes use.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

import idna

MAX_LOCAL_PART = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 254
SUBADDRESS_SEPARATOR = "+"

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# RFC 5322 atext, less the characters that route mail or escape paths ('%', '!', '/', '\').
_ATEXT = set("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~") - set("%!/")
_FORBIDDEN_NAMED = {
    "/": "'/'",
    "\\": "'\\'",
    "%": "'%' (percent-hack routing)",
    "!": "'!' (bang-path routing)",
    "@": "'@'",
    '"': "a quote",
    ":": "':' (source route)",
    ",": "','",
    "<": "'<'",
    ">": "'>'",
    "[": "'['",
    "]": "']'",
    ";": "';'",
    "(": "'('",
    ")": "')'",
    " ": "a space",
}


class AddressError(ValueError):
    """A name or address that mailhost refuses; the message says why, for a person to read."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def base_local(self) -> str:
        """The local part without its `+tag`: `user+tag@d` is delivered to `user@d`."""
        return self.local.split(SUBADDRESS_SEPARATOR, 1)[0] or self.local


def _check_controls(value: str, what: str) -> None:
    for ch in value:
        if ch == "\x00":
            raise AddressError(f"{what} contains a NUL byte")
        if ch in "\r\n":
            raise AddressError(f"{what} contains a line break (CR or LF)")
        if ord(ch) < 32 or ord(ch) == 127 or 0x80 <= ord(ch) < 0xA0:
            raise AddressError(f"{what} contains a control character (U+{ord(ch):04X})")


# Both are pure functions of their arguments, asked again and again for the same few names
# (every MAIL, RCPT, From: header and queue row): a tenth of the SMTP service's time went to
# checking the same strings. Refusals are exceptions, which the cache does not keep.
@functools.lru_cache(maxsize=4096)
def normalize_domain(name: str) -> str:
    """Return the lower-case A-label form of a domain given as U-label or A-label."""
    if not isinstance(name, str) or not name.strip():
        raise AddressError("domain is empty")
    _check_controls(name, "domain")
    name = name.strip()
    if name.endswith("."):
        raise AddressError("domain ends with a dot; give it without the trailing dot")
    if name.startswith("[") or _is_ip(name):
        raise AddressError("domain is an IP address literal, not a domain name")
    for ch in name:
        if ch in "/\\%!@\"':,;<>()[] \t":
            raise AddressError(f"domain contains {_FORBIDDEN_NAMED.get(ch, repr(ch))}")
    if ".." in name:
        raise AddressError("domain contains an empty label ('..')")
    try:
        if name.isascii():
            ascii_name = name.lower()
            for label in ascii_name.split("."):
                if label.startswith("xn--"):
                    idna.decode(label)
        else:
            ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"domain {name!r} is not a valid internationalised name: {exc}") from exc
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise AddressError("domain needs at least two labels, like example.org")
    if len(ascii_name) > MAX_DOMAIN:
        raise AddressError(f"domain is longer than {MAX_DOMAIN} characters")
    for label in labels:
        if len(label) > 63:
            raise AddressError(f"domain label {label[:20]!r}… is longer than 63 characters")
        if not _LABEL.match(label):
            raise AddressError(
                f"domain label {label!r} may hold only letters, digits and inner hyphens"
            )
    if labels[-1].isdigit():
        raise AddressError("domain's last label is all digits")
    return ascii_name


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def normalize_local_part(local: str, *, allow_subaddress: bool = True) -> str:
    """Return the case-folded local part, refusing quoting, routing and path syntax."""
    if not isinstance(local, str) or local == "":
        raise AddressError("local part is empty")
    _check_controls(local, "local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(f"local part is longer than {MAX_LOCAL_PART} bytes")
    if ".." in local:
        raise AddressError("local part contains '..'")
    if local.startswith(".") or local.endswith("."):
        raise AddressError("local part starts or ends with a dot")
    for ch in local:
        if ch in _FORBIDDEN_NAMED:
            raise AddressError(f"local part contains {_FORBIDDEN_NAMED[ch]}")
        if ch.isspace():
            raise AddressError("local part contains white space")
        if ch.isascii() and ch.lower() not in _ATEXT and ch != ".":
            raise AddressError(f"local part contains {ch!r}")
    if not allow_subaddress and SUBADDRESS_SEPARATOR in local:
        raise AddressError(
            f"local part contains '{SUBADDRESS_SEPARATOR}', which is kept for subaddressing"
        )
    return local.lower()


@functools.lru_cache(maxsize=4096)
def parse_address(address: str, *, allow_subaddress: bool = True) -> Address:
    """Split and normalise `local@domain`; a source route or several '@' are refused."""
    if not isinstance(address, str) or not address.strip():
        raise AddressError("address is empty")
    _check_controls(address, "address")
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if address.startswith("@"):
        raise AddressError("address is a source route (starts with '@')")
    if len(address.encode("utf-8")) > MAX_ADDRESS:
        raise AddressError(f"address is longer than {MAX_ADDRESS} bytes")
    if address.count("@") != 1:
        raise AddressError("address must contain exactly one '@'")
    local, domain = address.split("@")
    return Address(
        normalize_local_part(local, allow_subaddress=allow_subaddress), normalize_domain(domain)
    )


def normalize_address(address: str) -> str:
    return str(parse_address(address))


def display_domain(a_label: str) -> str:
    """The U-label form for people; the stored A-label stays the key."""
    try:
        return idna.decode(a_label)
    except idna.IDNAError:
        return a_label
