"""Zones and a local HTTPS server for the DNS wizard's tests: everything stays on 127.0.0.1.

`published_zone` is exactly what the wizard tells the owner to publish (records.zone_file), so a
correct zone and the wizard's advice cannot drift apart.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domains.mta_sts import policy_text
from domains.records import zone_file

HOST_ZONE = ("mail IN A 127.0.0.1", "ns IN A 127.0.0.1")


def published_zone(domain) -> list[str]:
    """The zone-file lines the wizard hands out that belong in the domain's own zone."""
    suffix = f"{domain.name}."
    lines = [line for line in zone_file(domain).splitlines()
             if line and not line.startswith(";") and line.split()[0].endswith(suffix)]
    return lines + ["ns IN A 127.0.0.1"]


def serve_zones(dns_server, *, ptr: str = "mail.mailhost.test.", zen: tuple[str, ...] = (),
                dbl: tuple[str, ...] = ()) -> None:
    """The mail host's zone, its reverse zone and the two Spamhaus zones the checks consult."""
    dns_server.zones["mailhost.test"] = list(HOST_ZONE)
    dns_server.zones["0.0.127.in-addr.arpa"] = [f"1 IN PTR {ptr}"] if ptr else []
    dns_server.zones["zen.spamhaus.org"] = list(zen)
    dns_server.zones["dbl.spamhaus.org"] = list(dbl)


def _certificate(tmp_path, names: list[str]):
    """A throw-away CA and a server certificate for `names`, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailhost test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


class _TlsServer:
    """An HTTP server on 127.0.0.1 wrapped in TLS, serving from a thread until close()."""

    def _serve(self, httpd, cert_file, key_file) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self.httpd, self.port = httpd, httpd.server_address[1]
        self.thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class PolicyServer(_TlsServer):
    """HTTPS on 127.0.0.1 answering /.well-known/mta-sts.txt with `body` (the real policy by default)."""

    def __init__(self, tmp_path, names: list[str]):
        self.body = policy_text()
        self.status = 200
        self.ca_file, cert_file, key_file = _certificate(tmp_path, names)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                payload = server.body.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler), cert_file, key_file)


@pytest.fixture
def checker_dns(dns_server, settings):
    """nsd with the mail host's zones; authoritative servers are asked on nsd's port."""
    settings.DNS_AUTHORITATIVE_PORT = dns_server.port
    settings.DNS_CHECK_TIMEOUT = 8
    serve_zones(dns_server)
    return dns_server


@pytest.fixture
def policy_server(tmp_path, settings):
    server = PolicyServer(tmp_path, ["mta-sts.example.org", "mta-sts.other.test"])
    settings.MTA_STS_HTTPS_PORT = server.port
    settings.MTA_STS_CA_FILE = str(server.ca_file)
    yield server
    server.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class DjangoHttps(_TlsServer):
    """The project's own WSGI app over HTTPS on 127.0.0.1, so the checker fetches the policy that
    /.well-known/mta-sts.txt really serves."""

    def __init__(self, tmp_path, names: list[str]):
        from django.core.wsgi import get_wsgi_application

        self.ca_file, cert_file, key_file = _certificate(tmp_path, names)
        self._serve(make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_QuietHandler),
                    cert_file, key_file)
