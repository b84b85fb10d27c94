"""DKIM signing of outbound mail (RFC 6376, RFC 8463 for ed25519).

dkimpy does the parts that must match every verifier byte for byte — header parsing,
relaxed canonicalisation, header selection and folding — and `cryptography` (OpenSSL) does the
private-key operation: dkimpy's RSA is pure Python (~12 ms a signature), OpenSSL's under 1 ms,
and dkimpy's ed25519 signing would need PyNaCl on top.

Signing happens once, when the message is queued (see docs/outbound.md): the stored bytes are
exactly what goes on the wire, retries do not re-sign, and a key rotated while mail waits does
not matter because a retired key stays published for a while.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
import time
from functools import lru_cache

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from django.conf import settings
from dkim import canonicalization

from domains.models import DkimKey, Domain
from mailhost.addresses import AddressError, parse_address

from .short_cache import DirectoryCache

# RFC 6376 section 5.4.1 recommendations plus the list headers of RFC 2369 and RFC 8058
# (List-Unsubscribe-Post must be signed for one-click unsubscribe to count).
SIGNED_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding",
)
LIST_HEADER = re.compile(rb"^list-[a-z-]+$")
# Signed once more than present, so an added second From: breaks the signature (RFC 6376 8.15).
OVERSIGNED = ("from",)

_BARE_NEWLINE = re.compile(rb"\r\n|\r|\n")


def normalize_crlf(data: bytes) -> bytes:
    """Every line ending becomes CRLF: what is signed must be what smtplib sends."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:  # a bare CR or LF somewhere
        data = _BARE_NEWLINE.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


@lru_cache(maxsize=64)
def _header_pattern(name: str, value: bool) -> re.Pattern:
    """Compiled once per name: `re`'s own cache still costs building the pattern text first."""
    tail = rb"[ \t]*:(.*(?:\r\n[ \t].*)*)" if value else rb"[ \t]*:"
    return re.compile(rb"^" + re.escape(name.encode()) + tail, re.IGNORECASE | re.MULTILINE)


def has_header(data: bytes, name: str) -> bool:
    return _header_pattern(name, False).search(_header_block(data)) is not None


def header_value(data: bytes, name: str) -> str:
    """The first `name:` header, unfolded, as text (undecoded): for decisions, not for display."""
    match = _header_pattern(name, True).search(_header_block(data))
    if not match:
        return ""
    return match.group(1).decode("utf-8", "replace").replace("\r\n", "").strip()


def prepare(data: bytes) -> bytes:
    """CRLF line endings, plus Date and Message-ID when the client left them out (RFC 5322 3.6)."""
    data = normalize_crlf(data)
    extra = b""
    if not has_header(data, "Date"):
        extra += b"Date: " + email.utils.formatdate(localtime=False, usegmt=True).encode() + b"\r\n"
    if not has_header(data, "Message-ID"):
        extra += b"Message-ID: " + email.utils.make_msgid(domain=settings.MAIL_HOSTNAME).encode() + b"\r\n"
    return extra + data


def from_domain(data: bytes) -> str | None:
    """The domain of the From: address: DMARC aligns d= with it, so that is the signing domain."""
    _, addr = email.utils.parseaddr(header_value(data, "From"))
    try:
        return parse_address(addr).domain
    except AddressError:
        return None


@lru_cache(maxsize=256)
def _load_key(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _raw_sign(key: DkimKey, digest_input: bytes) -> bytes:
    private = _load_key(key.private_key)
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(digest_input, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(private, ed25519.Ed25519PrivateKey):
        # RFC 8463: ed25519 signs the SHA-256 of the canonicalised headers, not the headers.
        return private.sign(hashlib.sha256(digest_input).digest())
    raise ValueError(f"unsupported DKIM key type for {key}")


def _include_headers(parsed_headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    counts: dict[bytes, int] = {}
    for name, _ in parsed_headers:
        lower = name.lower()
        if lower.decode("ascii", "replace") in SIGNED_HEADERS or LIST_HEADER.match(lower):
            counts[lower] = counts.get(lower, 0) + 1
    include: list[bytes] = []
    for name, n in counts.items():
        include += [name] * (n + (1 if name.decode() in OVERSIGNED else 0))
    return include


def signature_header(data: bytes, key: DkimKey) -> bytes:
    """One `DKIM-Signature:` header line (CRLF-terminated) for `data`, relaxed/relaxed."""
    headers, body = parse(data)
    canon = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    include = _include_headers(headers)
    if b"from" not in include:
        raise ValueError("a message without From: cannot be DKIM-signed")
    algorithm = b"ed25519-sha256" if key.algorithm == DkimKey.Algorithm.ED25519 else b"rsa-sha256"
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    domain = key.domain.name.encode()
    fields = [
        (b"v", b"1"), (b"a", algorithm), (b"c", b"relaxed/relaxed"), (b"d", domain),
        (b"s", key.selector.encode()), (b"t", str(int(time.time())).encode()),
        (b"h", b" : ".join(include)), (b"bh", body_hash), (b"b", b""),
    ]
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(b"DKIM-Signature"))
    sig_header = (b"DKIM-Signature", b" " + value)
    collected = _Collect()
    # Only the headers named in h= are canonicalized: the rest (the Received: line we
    # prepend is folded, so it took dkimpy's regular expressions) are never hashed.
    # select_headers then picks from them exactly as from all of them: order is kept.
    wanted = set(include)
    signed = [header for header in headers if header[0].lower().rstrip() in wanted]
    dkim.hash_headers(collected, canon, relaxed_headers(signed), include, sig_header, dict(fields))
    signature = base64.b64encode(_raw_sign(key, bytes(collected.data)))
    folded_b = b"\r\n\t".join(signature[i:i + 72] for i in range(0, len(signature), 72))
    return b"DKIM-Signature: " + value + folded_b + b"\r\n"


def parse(data: bytes) -> tuple[list, bytes]:
    """dkim.rfc822_parse(data) for a prepared (CRLF) message, with dkimpy parsing the header
    block alone: it splits the whole message into lines and joins the body's lines back, a
    quarter of the signer's Python for a 4 KiB message, where the body is simply what follows
    the first empty line."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or data.startswith(b"\r\n"):
        return dkim.rfc822_parse(data)
    headers, _ = dkim.rfc822_parse(data[:end + 2])
    return headers, data[end + 4:]


def relaxed_body(body: bytes) -> bytes:
    """The relaxed body canonicalization of RFC 6376 3.4.4, exactly as dkimpy computes it.

    dkimpy runs two regular expressions over every body (tabs and runs of spaces to one space,
    spaces before a line end dropped): a tenth of a millisecond per message, more than anything
    else the signer does in Python. Ordinary text has no tab, no double space and no space
    before a line end, and for it both passes change nothing, so they are skipped.
    """
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        return canonicalization.Relaxed.canonicalize_body(body)
    return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(body))


def relaxed_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The relaxed header canonicalization of RFC 6376 3.4.2, exactly as dkimpy computes it.

    dkimpy runs two regular expressions over every header's value (unfold, then runs of
    spaces and tabs to one space); for a value with no line break but its own line's CRLF at
    the end, no tab and no double space both change nothing but drop that CRLF, and what is
    left is the strip. Only folded or oddly spaced values take dkimpy's path. (Until the
    eighteenth session the CRLF that every parsed value ends with sent them all there.)
    """
    out = []
    for name, value in headers:
        # A parsed header's value ends with its line's CRLF; only what comes before it matters.
        text = value[:-2] if value.endswith(b"\r\n") else value
        if b"\n" in text or b"\r" in text or b"\t" in text or b"  " in text:
            out += canonicalization.Relaxed.canonicalize_headers([(name, value)])
        else:
            out.append((name.lower().rstrip(), text.strip() + b"\r\n"))
    return out


class _Collect:
    """Stands in for a hash object in dkim.hash_headers: keeps the bytes to sign them in one go."""

    def __init__(self):
        self.data = bytearray()

    def update(self, chunk: bytes) -> None:
        self.data += chunk


def signing_keys(domain: Domain) -> list[DkimKey]:
    """The domain's newest active RSA key and, when it has one, its newest active ed25519 key."""
    keys: dict[str, DkimKey] = {}
    for key in domain.dkim_keys.filter(state=DkimKey.State.ACTIVE).order_by("-activated_at"):
        keys.setdefault(key.algorithm, key)
    return [keys[a] for a in (DkimKey.Algorithm.RSA2048, DkimKey.Algorithm.ED25519) if a in keys]


# Every submitted message asked the database for its sender's Domain row and that domain's
# active keys: two queries before 250 for an answer that changes a few times a year. They are
# kept per process for SMTP_DIRECTORY_CACHE seconds, like the SMTP service's RCPT verdicts, and
# dropped at once in this process when a Domain or a DkimKey is saved or deleted (an admin's
# change in the web process reaches the SMTP service within those seconds). A rotated key
# signing a few seconds longer is harmless: rotation keeps the retired key published.
_hosted = DirectoryCache("signing-hosted", Domain, DkimKey)


def hosted_domain(name: str) -> tuple[Domain | None, list[DkimKey]]:
    """The hosted Domain called `name` (active or not, None when not hosted) and, when it is
    active, its signing keys."""
    found = _hosted.get(name)
    if found is None:
        domain = Domain.objects.filter(name=name).first()
        found = (domain, signing_keys(domain) if domain is not None and domain.active else [])
        _hosted.put(name, found)
    return found


def forget_hosted_domains() -> None:
    _hosted.clear()


def sign(data: bytes) -> bytes:
    """Prepend DKIM signatures of the From: domain when it is hosted here and has active keys.

    `data` must already be prepared (CRLF). Mail whose From: is not ours is left as it is.
    The RSA signature ends up on top: verifiers that read only the first signature (dkimpy's
    `verify`) then see the one every receiver supports.
    """
    name = from_domain(data)
    if not name:
        return data
    _, keys = hosted_domain(name)
    out = data
    for key in reversed(keys):
        out = signature_header(data, key) + out
    return out
