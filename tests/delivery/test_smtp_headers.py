"""Trace and authentication headers: Received: with TLS details on every message, and inbound
Authentication-Results: with SPF, DKIM (every signature) and DMARC against a real nsd."""

from __future__ import annotations

import base64
import smtplib

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from delivery import replies
from delivery.models import MessageLog
from delivery.sender_checks import SenderChecks, check_dmarc, organizational_domain
from tests.smtp_fixtures import client_tls
from tests.support import eventually


def rsa_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(public).decode()


@pytest.fixture
def sender_zones(shared_smtp_service):
    """sender.test signs with DKIM and publishes p=reject; mailer.test is an unaligned ESP."""
    dns_server = shared_smtp_service.dns
    pem, public = rsa_key()
    dns_server.zones["mailer.test"] = ['@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"']
    dns_server.zone("sender.test", '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
                    f'sel._domainkey IN TXT "v=DKIM1; k=rsa; p={public}"',
                    '_dmarc IN TXT "v=DMARC1; p=reject; adkim=r; aspf=r"')
    return pem


def signed(message: bytes, pem: bytes, domain: bytes = b"sender.test", selector: bytes = b"sel") -> bytes:
    signature = dkim.sign(message, selector, domain, pem, canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"subject"])
    return signature + message


def deliver(service, sender, data, starttls=False):
    with smtplib.SMTP("127.0.0.1", service.inbound, timeout=30) as client:
        if starttls:
            client.starttls(context=client_tls())
        client.sendmail(sender, ["bob@example.org"], data)


def stored_headers(bob) -> bytes:
    [path] = (bob.maildir / "new").iterdir()
    return path.read_bytes().split(b"\r\n\r\n")[0]


MESSAGE = b"From: Ann <ann@sender.test>\r\nSubject: report\r\n\r\nnumbers\r\n"


def test_an_aligned_signed_message_passes_spf_dkim_and_dmarc(shared_smtp_service, bob, sender_zones):
    deliver(shared_smtp_service, "ann@sender.test", signed(MESSAGE, sender_zones), starttls=True)
    headers = stored_headers(bob)
    assert b"Received: from " in headers and b"with ESMTPS (version=TLSv1." in headers
    assert b"Authentication-Results: mail.mailhost.test;" in headers
    assert b"spf=pass smtp.mailfrom=sender.test" in headers
    assert b"dkim=pass header.d=sender.test header.s=sel" in headers
    assert b"dmarc=pass policy.dmarc=reject header.from=sender.test" in headers


def test_a_dmarc_failure_under_p_reject_is_refused(shared_smtp_service, bob, sender_zones):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        deliver(shared_smtp_service, "bounce@mailer.test", MESSAGE)
    assert f"{refused.value.smtp_code} {refused.value.smtp_error.decode()}" == replies.DMARC_REJECT
    assert not (bob.maildir / "new").exists() or not any((bob.maildir / "new").iterdir())
    [row] = eventually(lambda: list(MessageLog.objects.filter(domain=bob.domain)))
    assert row.result == "refused"


def test_every_dkim_signature_is_checked_and_one_aligned_pass_is_enough(shared_smtp_service, bob, sender_zones):
    other_pem, _unpublished = rsa_key()
    data = signed(signed(MESSAGE, sender_zones), other_pem, domain=b"mailer.test", selector=b"gone")
    deliver(shared_smtp_service, "bounce@mailer.test", data)
    headers = stored_headers(bob)
    assert b"dkim=fail header.d=mailer.test header.s=gone" in headers
    assert b"dkim=pass header.d=sender.test header.s=sel" in headers
    assert b"dmarc=pass" in headers


def test_a_tampered_body_fails_dkim(shared_smtp_service, bob, sender_zones):
    data = signed(MESSAGE, sender_zones).replace(b"numbers", b"other numbers")
    deliver(shared_smtp_service, "ann@sender.test", data)
    assert b"dkim=fail header.d=sender.test" in stored_headers(bob)


def test_two_dmarc_records_mean_no_policy_so_nothing_is_refused(shared_smtp_service, bob, sender_zones):
    shared_smtp_service.dns.add("sender.test", '_dmarc IN TXT "v=DMARC1; p=none"')
    deliver(shared_smtp_service, "bounce@mailer.test", MESSAGE)
    assert b"dmarc=none" in stored_headers(bob)


def test_dns_errors_are_temperror_and_never_refuse_mail(shared_smtp_service, bob, sender_zones):
    message = MESSAGE.replace(b"sender.test", b"unserved.test")
    deliver(shared_smtp_service, "ann@unserved.test", signed(message, sender_zones, domain=b"unserved.test"))
    headers = stored_headers(bob)
    assert b"spf=temperror" in headers
    assert b"dkim=temperror header.d=unserved.test" in headers
    assert b"dmarc=temperror" in headers


def test_dmarc_alignment_uses_the_organisational_domain():
    assert organizational_domain("mail.news.example.co.uk") == "example.co.uk"
    relaxed = SenderChecks(spf="pass", spf_domain="bounces.example.org", from_domain="example.org")
    assert relaxed.dkim == [] and relaxed.reject is False
    assert relaxed.header("mx.test").startswith(b"Authentication-Results: mx.test;\r\n\tspf=pass")


def test_dmarc_without_a_record_is_none(dns_server):
    assert check_dmarc(SenderChecks(from_domain="dns-ready.test")) == ("none", "")


def test_with_the_dns_cache_on_a_verdict_is_reused_for_seconds_but_a_failure_never_is(dns_server, settings):
    from delivery import sender_checks

    settings.SMTP_DNS_CACHE = True
    sender_checks._verdicts.clear()
    dns_server.zone("cached.test", '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc IN TXT "v=DMARC1; p=reject"')
    assert sender_checks.check_spf("127.0.0.1", "client.test", "a@cached.test") == ("pass", "cached.test")
    assert sender_checks.dmarc_record("cached.test")["p"] == "reject"
    dns_server.stop()
    try:
        # The same questions within VERDICT_SECONDS are answered without DNS ...
        assert sender_checks.check_spf("127.0.0.1", "client.test", "a@cached.test") == ("pass", "cached.test")
        assert sender_checks.dmarc_record("cached.test")["p"] == "reject"
        # ... a new one is not, and its failure is not remembered.
        assert sender_checks.check_spf("127.0.0.2", "client.test", "a@cached.test")[0] == "temperror"
    finally:
        dns_server.restart()
    assert sender_checks.check_spf("127.0.0.2", "client.test", "a@cached.test") == ("pass", "cached.test")
    sender_checks._verdicts.clear()
