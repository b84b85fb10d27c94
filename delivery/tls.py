"""The TLS context for STARTTLS (587, and opportunistically on the MX) and implicit TLS (465).

Operators point SMTP_TLS_CERT/SMTP_TLS_KEY at their certificate. Without them a self-signed
pair for MAIL_HOSTNAME is made once under TLS_DIR, so a fresh checkout offers TLS (and thus AUTH)
at once; mail clients must then accept the certificate, as with any self-signed server.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings


def server_context() -> ssl.SSLContext:
    cert, key = certificate_paths()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    # A mail server must not demand client certificates (aiosmtpd warns about anything else).
    context.verify_mode = ssl.CERT_NONE
    context.check_hostname = False
    return context


def certificate_paths() -> tuple[str, str]:
    if settings.SMTP_TLS_CERT:
        return settings.SMTP_TLS_CERT, settings.SMTP_TLS_KEY
    directory = Path(settings.TLS_DIR)
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    if not (cert.exists() and key.exists()):
        # Several services start at once on a fresh checkout (`runsmtp --processes N`, web):
        # each writing its own pair could leave one's key beside another's certificate.
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".self-signed.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (cert.exists() and key.exists()):
                make_self_signed(settings.MAIL_HOSTNAME, cert, key)
    return str(cert), str(key)


def make_self_signed(hostname: str, cert_path: Path, key_path: Path) -> None:
    """Write a key and a 10-year self-signed certificate; atomic so parallel starts agree."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
