"""MTA-STS (RFC 8461): the policy comes over verified HTTPS, is cached, and `enforce` means
no TLS or a bad certificate defers the mail instead of sending it in plaintext.

Everything is real and local: nsd publishes MX, A and `_mta-sts` TXT, an HTTPS server with a
certificate from a test CA serves the policy, and the MX is an aiosmtpd sink.
"""

from __future__ import annotations

import time

import pytest

from delivery import mta_sts
from delivery.models import MtaStsPolicy, QueuedRecipient
from delivery.queue import enqueue
from tests.delivery.outbound_peers import (
    CertificateAuthority,
    PolicyServer,
    Sink,
    Trickler,
    broken_tls_context,
    self_signed_context,
)
from tests.delivery.test_outbound_delivery import MESSAGE, run_queue

State = QueuedRecipient.State
ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n"


@pytest.fixture
def ca(tmp_path, settings):
    authority = CertificateAuthority(tmp_path)
    settings.MTA_STS_CA_FILE = str(authority.bundle)
    return authority


def publish(dns_server, settings, ca, policy: str, policy_id: str = "20261122"):
    server = PolicyServer(ca.server_context("mta-sts.secure.test"), policy)
    settings.MTA_STS_HTTPS_PORT = server.port
    dns_server.zone("secure.test", "@ IN MX 10 mx.secure.test.", "mx IN A 127.0.0.2",
                    "mta-sts IN A 127.0.0.1", f'_mta-sts IN TXT "v=STSv1; id={policy_id}"')
    return server


def test_an_enforced_policy_is_fetched_over_https_and_cached(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE) as server:
        policy = mta_sts.policy_for("secure.test")
        assert policy.enforced and policy.mx == ["mx.secure.test"] and policy.policy_id == "20261122"
        assert mta_sts.policy_for("secure.test").enforced
        assert server.requests == 1, "an unchanged id is served from the cache"
    assert MtaStsPolicy.objects.get(domain="secure.test").mode == "enforce"


def test_a_new_policy_id_makes_it_fetch_again(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE) as server:
        mta_sts.policy_for("secure.test")
        dns_server.zone("secure.test", "mta-sts IN A 127.0.0.1", '_mta-sts IN TXT "v=STSv1; id=2"')
        assert mta_sts.policy_for("secure.test").policy_id == "2"
        assert server.requests == 2


def test_a_policy_served_with_a_certificate_we_do_not_trust_is_ignored(bob, dns_server, settings, ca, tmp_path):
    untrusted = tmp_path / "other"
    untrusted.mkdir()
    server = PolicyServer(self_signed_context(untrusted, "mta-sts.secure.test"), ENFORCE)
    settings.MTA_STS_HTTPS_PORT = server.port
    dns_server.zone("secure.test", "mta-sts IN A 127.0.0.1", '_mta-sts IN TXT "v=STSv1; id=1"')
    with server:
        assert mta_sts.policy_for("secure.test").mode == "none"


def test_mx_patterns_match_exact_names_and_one_wildcard_label():
    policy = mta_sts.Policy(mode="enforce", mx=["mx.secure.test", "*.mail.secure.test"])
    assert policy.allows("MX.secure.test.") and policy.allows("a.mail.secure.test")
    assert not policy.allows("a.b.mail.secure.test") and not policy.allows("evil.test")


def test_enforce_delivers_over_tls_to_a_listed_mx_with_a_valid_certificate(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE), Sink(tls=ca.server_context("mx.secure.test")) as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        message = enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert len(sink.wait_for(1)) == 1 and sink.messages[0].tls
    assert message.recipients.get().tls_version.startswith("TLSv1.")


def test_enforce_defers_when_the_mx_offers_no_starttls(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE), Sink() as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        message = enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert sink.messages == [] and sink.handler.rcpt_attempts == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "STARTTLS" in rcpt.last_reply


def test_enforce_defers_when_the_mx_certificate_is_not_trusted(bob, dns_server, settings, ca, tmp_path):
    untrusted = tmp_path / "other"
    untrusted.mkdir()
    with publish(dns_server, settings, ca, ENFORCE), \
            Sink(tls=self_signed_context(untrusted, "mx.secure.test")) as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        message = enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert sink.messages == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "certificate" in rcpt.last_reply.lower()


def test_enforce_never_falls_back_to_plaintext_when_the_handshake_fails(bob, dns_server, settings, ca, tmp_path):
    with publish(dns_server, settings, ca, ENFORCE), Sink(tls=broken_tls_context(tmp_path)) as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        message = enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert sink.messages == [] and sink.handler.rcpt_attempts == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "TLS handshake failed" in rcpt.last_reply


def test_enforce_defers_when_the_mx_refuses_starttls(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE), \
            Sink(tls=ca.server_context("mx.secure.test"), starttls_reply="454 4.7.0 TLS not available") as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        message = enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert sink.messages == [] and sink.handler.rcpt_attempts == []
    rcpt = message.recipients.get()
    assert rcpt.state == State.DEFERRED and "refused STARTTLS" in rcpt.last_reply and "454" in rcpt.last_reply


def test_enforce_skips_an_mx_the_policy_does_not_list(bob, dns_server, settings, ca):
    policy = ENFORCE.replace("mx: mx.secure.test", "mx: other.secure.test")
    with publish(dns_server, settings, ca, policy), Sink(tls=ca.server_context("mx.secure.test")) as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        message = enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert sink.messages == []
    assert "not listed in the MTA-STS policy" in message.recipients.get().last_reply


def test_testing_mode_still_delivers_without_tls(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE.replace("enforce", "testing")), Sink() as sink:
        settings.SMTP_OUTBOUND_PORT = sink.port
        enqueue("bob@example.org", ["someone@secure.test"], MESSAGE)
        run_queue()
        assert len(sink.wait_for(1)) == 1 and not sink.messages[0].tls


def test_the_delivery_path_reuses_a_policy_answer_until_the_recheck_time(bob, dns_server, settings, ca):
    with publish(dns_server, settings, ca, ENFORCE):
        assert mta_sts.policy_for_delivery("secure.test").policy_id == "20261122"
        dns_server.zone("secure.test", "mta-sts IN A 127.0.0.1", '_mta-sts IN TXT "v=STSv1; id=2"')
        assert mta_sts.policy_for_delivery("secure.test").policy_id == "20261122", "remembered"
        settings.MTA_STS_RECHECK_SECONDS = 0
        mta_sts.forget_recent()
        assert mta_sts.policy_for_delivery("secure.test").policy_id == "2"


def test_a_policy_server_that_trickles_its_answer_is_given_up_at_the_fetch_deadline(dns_server, settings, ca,
                                                                                    monkeypatch):
    slow = Trickler(ca.server_context("mta-sts.secure.test"), pause=0.3)
    settings.MTA_STS_HTTPS_PORT = slow.port
    monkeypatch.setattr(mta_sts, "FETCH_SECONDS", 1.0)
    dns_server.zone("secure.test", "mta-sts IN A 127.0.0.1", '_mta-sts IN TXT "v=STSv1; id=1"')
    started = time.monotonic()
    with pytest.raises(mta_sts.PolicyError, match="timed out|within 1 s"):
        mta_sts.fetch("secure.test")
    assert time.monotonic() - started < 3, "one deadline for the whole answer, not one per byte"


@pytest.mark.parametrize(("policy", "content_type", "problem"), [
    (ENFORCE + "#" * (64 * 1024), "text/plain", "larger than 64 KiB"),
    (ENFORCE, "text/html", "content type 'text/html'"),
])
def test_an_oversized_or_mistyped_policy_is_refused_with_the_reason(dns_server, settings, ca, policy,
                                                                    content_type, problem):
    server = PolicyServer(ca.server_context("mta-sts.secure.test"), policy, content_type=content_type)
    settings.MTA_STS_HTTPS_PORT = server.port
    dns_server.zone("secure.test", "mta-sts IN A 127.0.0.1", '_mta-sts IN TXT "v=STSv1; id=1"')
    with server, pytest.raises(mta_sts.PolicyError, match=problem):
        mta_sts.fetch("secure.test")
