"""Real peers for outbound tests: an aiosmtpd sink, a test CA, an HTTPS server, Mail::DKIM.

The sink decides by the recipient's local part what it answers, like the receivers of
FIELD-NOTES: `reject…` 550 5.1.1, `grey…` 451 the first time then 250, `slow…` stalls the first
time before answering RCPT (to kill a worker mid-delivery), `full…` 452 4.2.2, anything else 250;
a sender whose local part starts with `blocked` gets 550 5.7.1 at MAIL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import ROOT, free_port, need_program

VERIFIER = Path(__file__).with_name("dkim_verify.pl")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    session: int
    tls: bool
    mail_options: list[str] = field(default_factory=list)


@dataclass
class SinkHandler:
    stall_seconds: float = 30.0
    messages: list[Received] = field(default_factory=list)
    greylisted: set[str] = field(default_factory=set)
    rcpt_attempts: list[str] = field(default_factory=list)
    stalled: set[str] = field(default_factory=set)
    rcpt_limit: int = 0  # recipients per transaction before 452, as Gmail and others limit them
    transactions: list[int] = field(default_factory=list)  # recipients accepted, per transaction
    pipelining: bool = False  # offer PIPELINING (RFC 2920), as nearly every real MX does
    # Per MAIL: whether the commands after it (up to DATA) had already arrived with it.
    pipelined: list[bool] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.pipelined.append(b"DATA\r\n" in bytes(server._reader._buffer).upper())
        if address.split("@")[0].lower().startswith("blocked"):
            return "550 5.7.1 Sender blocked"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        self.rcpt_attempts.append(address)
        if self.rcpt_limit and len(envelope.rcpt_tos) >= self.rcpt_limit:
            return "452 4.5.3 Too many recipients"
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        if local.startswith("full"):
            return "452 4.2.2 Mailbox full"
        if local.startswith("grey") and address not in self.greylisted:
            self.greylisted.add(address)
            return "451 4.7.1 Greylisted, try again later"
        if local.startswith("slow") and address not in self.stalled:
            self.stalled.add(address)
            await asyncio.sleep(self.stall_seconds)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.transactions.append(len(envelope.rcpt_tos))
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      id(session), session.ssl is not None
                                      or server.transport.get_extra_info("ssl_object") is not None,
                                      list(envelope.mail_options)))
        return "250 2.0.0 Ok: queued"

    @property
    def sessions(self) -> int:
        return len({m.session for m in self.messages})


class _Refusing(Controller):
    """Answers some commands with a fixed refusal: STARTTLS as a peer whose TLS is misconfigured
    (454), DATA as a peer that refuses the message before taking it (554)."""

    refusals: dict[str, str] = {}

    def factory(self):
        server = super().factory()
        for command, reply in self.refusals.items():
            async def refuse(arg, reply=reply):
                await server.push(reply)
            server._smtp_methods[command] = refuse
        return server


class Sink:
    """A real aiosmtpd server on 127.0.0.x:port, optionally offering STARTTLS."""

    def __init__(self, host: str = "127.0.0.2", port: int | None = None, tls: ssl.SSLContext | None = None,
                 logins: dict[str, str] | None = None, implicit_tls: bool = False, starttls_reply: str = "",
                 smtputf8: bool = False, size_limit: int | None = None, data_reply: str = "",
                 pipelining: bool = False):
        """`logins`: a smarthost that takes mail only after AUTH (over TLS) as one of these users.
        `implicit_tls`: `tls` wraps the connection from its first byte (port 465 style).
        `starttls_reply`: STARTTLS is offered but answered with this refusal.
        `smtputf8`: offer SMTPUTF8 (RFC 6531); `size_limit`: the SIZE it announces and enforces.
        `data_reply`: the DATA command itself is refused with this. `pipelining`: offer PIPELINING."""
        self.handler = SinkHandler(pipelining=pipelining)
        self.host = host
        self.port = port or free_port()
        self.logins: list[str] = []
        kwargs = {"ssl_context": tls} if implicit_tls else {"tls_context": tls, "require_starttls": False}
        kwargs["enable_SMTPUTF8"] = smtputf8
        if size_limit is not None:
            kwargs["data_size_limit"] = size_limit
        if logins is not None:
            # aiosmtpd counts only STARTTLS as TLS; an implicit-TLS connection is TLS throughout.
            kwargs |= {"authenticator": self._authenticator(logins), "auth_required": True,
                       "auth_require_tls": not implicit_tls}
        refusals = {k: v for k, v in (("STARTTLS", starttls_reply), ("DATA", data_reply)) if v}
        self.controller = (_Refusing if refusals else Controller)(
            self.handler, hostname=host, port=self.port, server_hostname="sink.test", ready_timeout=10, **kwargs)
        self.controller.refusals = refusals

    def _authenticator(self, logins: dict[str, str]):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def check(server, session, envelope, mechanism, data):
            ok = isinstance(data, LoginPassword) and logins.get(data.login.decode()) == data.password.decode()
            if ok:
                self.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)  # a refusal answers 535
        return check

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


class CertificateAuthority:
    """A private CA made with `cryptography`; issues server certificates for test host names."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailhost test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = workdir / "ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, hostname: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path = self.workdir / f"{hostname}.crt"
        key_path = self.workdir / f"{hostname}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
        return ctx


def self_signed_context(workdir: Path, hostname: str = "sink.test") -> ssl.SSLContext:
    """A server context whose certificate nobody trusts: opportunistic TLS must still use it."""
    return CertificateAuthority(workdir).server_context(hostname)


def broken_tls_context(workdir: Path) -> ssl.SSLContext:
    """A server context no current client can finish a handshake with: TLS 1.1 at most, as an
    unpatched old appliance speaks. STARTTLS is offered and then fails mid-handshake."""
    own = workdir / "broken-tls"  # its own directory: a CA in `workdir` keeps its files
    own.mkdir(exist_ok=True)
    ctx = self_signed_context(own)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated is the point
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


class PolicyServer:
    """Serves one MTA-STS policy over HTTPS on 127.0.0.1, certificate from the test CA."""

    def __init__(self, ctx: ssl.SSLContext, policy: str, content_type: str = "text/plain"):
        body = policy.encode()
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PolicyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class Trickler:
    """A TLS endpoint that reads the request, then answers one byte every `pause` seconds."""

    def __init__(self, ctx, pause: float):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ctx, self.pause = ctx, pause
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\n\r\n":
                    tls.sendall(bytes([byte]))
                    time.sleep(self.pause)
        except OSError:
            pass


def dkim_txt_lines(domain) -> list[str]:
    """Zone-file lines publishing every DKIM key of `domain`, TXT split into 255-byte strings."""
    lines = []
    for key in domain.dkim_keys.all():
        value = key.txt_value
        chunks = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        lines.append(f"{key.selector}._domainkey IN TXT {chunks}")
    return lines


def mail_dkim_verify(message: bytes, dns_port: int) -> list[str]:
    """Perl Mail::DKIM's verdict on every signature (e.g. ['pass', 'pass']), DNS via loopback nsd."""
    need_program("perl")
    proc = subprocess.run(["perl", str(VERIFIER), str(dns_port)], input=message, capture_output=True,
                          timeout=30, cwd=ROOT)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"Mail::DKIM verifier failed: {proc.stderr.decode()}")
    return proc.stdout.decode().split()
