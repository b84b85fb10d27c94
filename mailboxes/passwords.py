"""Password hashing shared by Django, the SMTP service and Dovecot.

Mailbox passwords are argon2id with parallelism 1: libsodium (Dovecot's `{ARGON2ID}`) verifies
only p=1, and OWASP's minimum (19 MiB, t=2) keeps a verification around 20 ms, so SMTP AUTH
bursts stay affordable. Django stores `argon2$argon2id$v=19$…`; Dovecot reads the same PHC
string after `{ARGON2ID}`. Relay credentials carry random high-entropy secrets, so a salted
SHA-512 (`{SSHA512}`, also a Dovecot scheme) is enough and costs microseconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from django.contrib.auth.hashers import Argon2PasswordHasher


class MailArgon2Hasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 19456
    parallelism = 1


def dovecot_scheme(django_hash: str) -> str:
    """Django's stored hash as Dovecot reads it, or '' when Dovecot cannot verify it."""
    if django_hash.startswith("argon2$argon2id$"):
        return "{ARGON2ID}" + django_hash[len("argon2"):]
    if django_hash.startswith("{SSHA512}"):
        return django_hash
    return ""


def make_secret() -> str:
    """A relay credential secret: 144 bits, URL- and shell-safe, easy to paste."""
    return secrets.token_urlsafe(18)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(secret.encode("utf-8") + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode("ascii")


def check_secret(secret: str, stored: str) -> bool:
    if not stored.startswith("{SSHA512}"):
        return False
    raw = base64.b64decode(stored[len("{SSHA512}"):])
    digest, salt = raw[:64], raw[64:]
    return hmac.compare_digest(hashlib.sha512(secret.encode("utf-8") + salt).digest(), digest)
