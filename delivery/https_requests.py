"""HTTPS requests the worker makes to other people's servers: MTA-STS policies and webhooks.

Both callers resolve the host through our own resolver and choose the address themselves (a
webhook refuses private ones), so the connection goes to that address and not to whatever a
library would resolve again; the certificate is verified for the host name. The answer is read
against one deadline: http.client's timeout is per read, so a server trickling a byte at a time
held a worker, which also delivers mail, for as long as it liked.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time


class _Received:
    """The bytes already read, where http.client.HTTPResponse expects a socket."""

    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode: str):
        return io.BytesIO(self.data)


def exchange(host: str, address: str, port: int, request: bytes, context: ssl.SSLContext, *,
             seconds: float, limit: int, until: bytes | None = None) -> bytes:
    """Send `request` to `host` at `address`:`port` over verified TLS; what came back by
    `seconds` after the start: up to the server's close, `limit` bytes, or the first `until`.

    Raises OSError (ssl.SSLError, TimeoutError included) when it cannot connect, the
    certificate does not verify, or the deadline passes first.
    """
    deadline = time.monotonic() + seconds
    with socket.create_connection((address, port), timeout=seconds) as raw:
        raw.settimeout(_left(deadline, seconds))
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(request)
            answer = bytearray()
            while len(answer) < limit and not (until and until in answer):
                tls.settimeout(_left(deadline, seconds))
                chunk = tls.recv(min(65536, limit - len(answer)))
                if not chunk:
                    break
                answer += chunk
            return bytes(answer)


def _left(deadline: float, seconds: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"no complete answer within {seconds:g} s")
    return left


def parse(answer: bytes) -> http.client.HTTPResponse:
    """The answer as http.client reads it (status, headers, a body chunked or not)."""
    response = http.client.HTTPResponse(_Received(answer))
    response.begin()
    return response
