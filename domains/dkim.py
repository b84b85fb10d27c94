"""DKIM key material: generation and the DNS record that publishes it.

Keys are made with `cryptography` (the same library that later does the RSA operation fast);
the private key is kept as PKCS#8 PEM, which dkimpy and Mail::DKIM both read.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.utils import timezone

from .models import DkimKey, Domain


def _pem(private_key) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def generate_keypair(algorithm: str) -> tuple[str, str]:
    """Return (private PEM, public p= value) for `rsa-2048` or `ed25519`."""
    if algorithm == DkimKey.Algorithm.ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _pem(key), base64.b64encode(raw).decode("ascii")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _pem(key), base64.b64encode(der).decode("ascii")


def next_selector(domain: Domain, algorithm: str) -> str:
    """A dated selector (`mh202611`, `mh202611e` for ed25519) that is unused for the domain."""
    base = f"{settings.DKIM_SELECTOR_PREFIX}{timezone.now():%Y%m}"
    if algorithm == DkimKey.Algorithm.ED25519:
        base += "e"
    taken = set(domain.dkim_keys.values_list("selector", flat=True))
    selector, n = base, 1
    while selector in taken:
        n += 1
        selector = f"{base}-{n}"
    return selector


def create_key(domain: Domain, algorithm: str = DkimKey.Algorithm.RSA2048, *,
               active: bool = False) -> DkimKey:
    private, public = generate_keypair(algorithm)
    key = DkimKey.objects.create(
        domain=domain,
        selector=next_selector(domain, algorithm),
        algorithm=algorithm,
        private_key=private,
        public_key=public,
    )
    if active:
        key.activate()
    return key
