"""End to end: a user submits over authenticated submission (runsmtp, STARTTLS, AUTH PLAIN), a
real Celery worker delivers to the remote MX found through real DNS, and the peer receives a
message whose DKIM signature dkimpy and Mail::DKIM both accept.
"""

from __future__ import annotations

import smtplib

import dkim

from tests.delivery.outbound_peers import dkim_txt_lines, mail_dkim_verify
from tests.delivery.test_outbound_worker import sink, start_worker, wait_until  # noqa: F401 - fixtures
from tests.smtp_fixtures import client_tls
from tests.support import PASSWORD


def test_submitted_mail_reaches_the_remote_mx_signed(bob, example_org, dns_server, smtp_service,
                                                       start_worker, sink):  # noqa: F811
    dns_server.zone("example.org", *dkim_txt_lines(example_org))
    start_worker()
    with smtplib.SMTP("127.0.0.1", smtp_service.submission, timeout=20) as client:
        client.starttls(context=client_tls())
        client.login("bob@example.org", PASSWORD)
        client.sendmail("bob@example.org", ["carol@remote.test"],
                        b"From: Bob <bob@example.org>\r\nTo: carol@remote.test\r\nSubject: report\r\n\r\n"
                        b"The report is attached.\r\n")
    wait_until(lambda: len(sink.messages) == 1)
    received = sink.messages[0]
    assert received.mail_from == "bob@example.org" and received.rcpt_tos == ["carol@remote.test"]
    data = received.data
    assert data.startswith(b"DKIM-Signature:")
    assert b"Message-ID:" in data and b"Date:" in data
    assert dkim.verify(data)
    assert mail_dkim_verify(data, dns_server.port) == ["pass"]
