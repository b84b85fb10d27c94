"""Listening sockets shared by the copies of the SMTP service, and who accepts each connection.

`runsmtp --processes N` used to let every copy bind the ports with SO_REUSEPORT: the kernel then
hands each connection to a copy by a hash of its addresses, blind to load. A submission client
keeps its connection for many messages, so a few clients often all landed on one copy, which ran
on one core (Python's GIL) while the other copies idled: in the outbound benchmark all four
clients on one of two copies half the time. Now the parent binds each port once and the copies
inherit the one socket and its one accept queue; every copy is woken for a new connection, and
one holding more open connections than another copy steps back for a moment so that the less
busy copy takes it (least connections, as a load balancer would). A copy that dies also no
longer takes the connections waiting in its own accept queue with it.

SO_REUSEPORT stays on the socket, so separate `runsmtp` commands may still share a port.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import select
import socket
from collections.abc import Callable

log = logging.getLogger("mailhost.smtp")
BACKLOG = 128
# How long a busier copy leaves a new connection to the others. The less busy copy was woken for
# it too and accepts within its next loop iteration; if it has not by then, the busier one does.
STEP_BACK_SECONDS = 0.005
# accept() failing for want of descriptors or memory: the connection waits in the queue meanwhile.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of `host` (as asyncio's create_server makes them).

    Raises OSError when a port is taken, with every socket made so far closed."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Balance:
    """Open connections per copy, in memory the forked copies share (one writer per slot)."""

    def __init__(self, copies: int = 1):
        self._memory = mmap.mmap(-1, 8 * copies)    # anonymous and MAP_SHARED: survives fork
        self._counts = memoryview(self._memory).cast("q")
        self.copy = 0

    def take_slot(self, copy: int) -> None:
        """Called in a forked copy: the slot this copy counts its connections in."""
        self.copy = copy

    def busier_than_another(self) -> bool:
        counts = self._counts
        return counts[self.copy] > min(counts)

    def opened(self) -> Callable[[], None]:
        """Count a connection; returns the function that uncounts it, safe to call twice."""
        self._counts[self.copy] += 1
        open_ = True

        def closed() -> None:
            nonlocal open_
            if open_:
                open_ = False
                self._counts[self.copy] -= 1
        return closed


class Acceptor:
    """Accepts on one listening socket for this copy, stepping back when it is the busier one.

    `factory(closed)` makes the protocol for a connection; the protocol calls `closed()` when
    its connection ends. `ssl`: implicit TLS (port 465), handshake before the protocol starts.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory, *, ssl=None,
                 balance: Balance | None = None):
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.ssl = ssl
        self.balance = balance or Balance()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        """Stop accepting here (the other copies go on until they are stopped too)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        if self.balance.busier_than_another():
            self._pause(STEP_BACK_SECONDS, then=self._after_stepping_back)
            return
        self._accept()

    def _after_stepping_back(self) -> None:
        """Still waiting after the others had their chance: take it. Else listen as before."""
        if select.select([self.sock], [], [], 0)[0]:
            self._accept()
        if not self._closed and self._timer is None:
            self.loop.add_reader(self.sock.fileno(), self._readable)

    def _pause(self, seconds: float, then: Callable[[], None]) -> None:
        self.loop.remove_reader(self.sock.fileno())

        def resume() -> None:
            self._timer = None
            if not self._closed:
                then()
        self._timer = self.loop.call_later(seconds, resume)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return      # another copy took it, or the client gave up while it waited
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRORS:
                raise
            log.error("cannot accept connections: %s; trying again in a second", exc)
            self._pause(1.0, then=lambda: self.loop.add_reader(self.sock.fileno(), self._readable))
            return
        conn.setblocking(False)
        self.loop.create_task(self._start(conn, self.balance.opened()))

    async def _start(self, conn: socket.socket, closed: Callable[[], None]) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: self.factory(closed), conn, ssl=self.ssl)
        except OSError as exc:     # a failed TLS handshake (TimeoutError too), a reset
            closed()
            conn.close()
            log.info("connection not started: %s", exc)
