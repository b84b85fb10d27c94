"""A broker that accepts connections and never answers (a wedged Redis, or one whose address
moved without a reset) costs submission nothing: every message still gets its 250 at once and
waits on the queue for the beat sweep. Before, the session that kicked the worker waited on the
broker's answer until its client gave up, and a client that gives up on a message already
queued sends it again."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest

from delivery.models import QueuedMessage
from tests.smtp_fixtures import client_tls
from tests.support import PASSWORD, eventually

MESSAGE = b"From: Bob <bob@example.org>\r\nTo: friend@remote.test\r\nSubject: queued\r\n\r\nHello.\r\n"


class SilentBroker:
    """A TCP listener on loopback that takes every connection and never says a word."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent_broker():
    broker = SilentBroker()
    yield broker
    broker.close()


def test_submission_answers_at_once_while_the_broker_never_answers(smtp_service_factory, bob, silent_broker):
    service = smtp_service_factory(CELERY_BROKER_URL=f"redis://127.0.0.1:{silent_broker.port}/0")
    with smtplib.SMTP("127.0.0.1", service.submission, timeout=10) as client:
        client.starttls(context=client_tls())
        client.login("bob@example.org", PASSWORD)
        for n in range(3):
            assert client.sendmail("bob@example.org", [f"friend{n}@remote.test"], MESSAGE) == {}
    eventually(lambda: silent_broker.connections)     # the service did try to kick a worker through it
    assert sorted(m.recipients.get().address for m in QueuedMessage.objects.all()) == [
        "friend0@remote.test", "friend1@remote.test", "friend2@remote.test"]
