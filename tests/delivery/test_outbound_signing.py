"""Outbound mail is DKIM-signed once, at enqueue, with the sending domain's active keys.

Every signature is checked by two independent verifiers — dkimpy and Perl's Mail::DKIM — both
fetching the public keys from a real nsd on loopback.
"""

from __future__ import annotations

import dkim
import pytest

from delivery import signing
from delivery.queue import enqueue
from domains.dkim import create_key
from tests.delivery.outbound_peers import dkim_txt_lines, mail_dkim_verify

MESSAGE = (b"From: Bob <bob@example.org>\nTo: Carol <carol@remote.test>\nCc: dan@remote.test\n"
           b"Subject: Quarterly numbers\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: 8bit\nList-Unsubscribe: <https://example.org/u/1>\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\nHello  Carol,\n\nnumbers attached.\n")


@pytest.fixture
def signing_domain(example_org, dns_server):
    key = example_org.active_dkim_key() or create_key(example_org, active=True)
    assert key.state == "active"
    dns_server.zone("example.org", *dkim_txt_lines(example_org))
    return example_org


def _signatures(data: bytes) -> list[dict]:
    d = dkim.DKIM(data)
    return [dkim.util.parse_tag_value(v) for k, v in d.headers if k.lower() == b"dkim-signature"]


def test_queued_mail_carries_a_relaxed_signature_that_dkimpy_and_mail_dkim_accept(signing_domain, dns_server):
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], MESSAGE).data)
    sigs = _signatures(data)
    assert len(sigs) == 1
    assert sigs[0][b"c"] == b"relaxed/relaxed"
    assert sigs[0][b"d"] == b"example.org"
    assert dkim.verify(data)
    assert mail_dkim_verify(data, dns_server.port) == ["pass"]


def test_the_signature_covers_the_identity_mime_and_one_click_unsubscribe_headers(signing_domain):
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], MESSAGE).data)
    signed = [h.strip() for h in _signatures(data)[0][b"h"].decode().split(":")]
    for name in ("from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type",
                 "content-transfer-encoding", "list-unsubscribe", "list-unsubscribe-post"):
        assert name in signed
    assert signed.count("from") == 2, "From is over-signed so a second From: breaks the signature"


def test_an_ed25519_key_adds_a_second_signature_that_both_verifiers_accept(signing_domain, dns_server):
    create_key(signing_domain, "ed25519", active=True)
    dns_server.zone("example.org", *dkim_txt_lines(signing_domain))
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], MESSAGE).data)
    assert [s[b"a"] for s in _signatures(data)] == [b"rsa-sha256", b"ed25519-sha256"]
    verifier = dkim.DKIM(data)
    assert verifier.verify(idx=0) and verifier.verify(idx=1)
    # Debian 12's Mail::DKIM checks RSA only; a newer one (or dkimpy above) checks ed25519 too.
    assert mail_dkim_verify(data, dns_server.port) in (["pass", "pass"], ["pass", "unsupported"])


def test_bare_line_feeds_become_crlf_and_missing_date_and_message_id_are_added(signing_domain):
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], MESSAGE).data)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert signing.has_header(data, "Date") and signing.has_header(data, "Message-ID")
    assert data.endswith(b"numbers attached.\r\n")


def test_a_date_and_message_id_the_client_set_are_kept(signing_domain):
    own = b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <own@example.org>\r\n" + MESSAGE
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], own).data)
    assert data.count(b"Message-ID:") == 1 and b"<own@example.org>" in data
    assert data.count(b"\r\nDate:") + data.startswith(b"Date:") == 1


def test_a_retired_key_no_longer_signs(signing_domain):
    signing_domain.active_dkim_key().retire()
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], MESSAGE).data)
    assert _signatures(data) == []


def test_mail_whose_from_is_not_hosted_here_is_not_signed(signing_domain):
    foreign = MESSAGE.replace(b"bob@example.org", b"someone@elsewhere.test")
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], foreign).data)
    assert _signatures(data) == []


def test_forwarded_mail_keeps_its_bytes_and_is_not_re_signed(signing_domain):
    original = MESSAGE.replace(b"\n", b"\r\n")
    data = bytes(enqueue("someone@elsewhere.test", ["carol@remote.test"], original, source="inbound").data)
    assert data == original


def test_a_tampered_body_fails_in_both_verifiers(signing_domain, dns_server):
    data = bytes(enqueue("bob@example.org", ["carol@remote.test"], MESSAGE).data)
    tampered = data.replace(b"numbers attached", b"numbers changed!")
    assert not dkim.verify(tampered)
    assert mail_dkim_verify(tampered, dns_server.port) == ["fail"]


def test_keys_are_loaded_without_openssls_consistency_checks_since_only_we_make_them(monkeypatch):
    """The checks cost ~35 ms a key; keys are only ever generated here (there is no import),
    so they are skipped. If an import path is ever added, it must validate there."""
    from cryptography.hazmat.primitives import serialization

    from domains import dkim as dkim_keys
    from domains.models import DkimKey

    seen = []
    original = serialization.load_pem_private_key

    def load(data, password, **kwargs):
        seen.append(kwargs.get("unsafe_skip_rsa_key_validation"))
        return original(data, password, **kwargs)

    monkeypatch.setattr(serialization, "load_pem_private_key", load)
    private, _ = dkim_keys.generate_keypair(DkimKey.Algorithm.RSA2048)
    signing._load_key.cache_clear()
    signing._load_key(private)
    assert seen == [True]
    assert not _writable_private_key_fields()


def _writable_private_key_fields() -> list[str]:
    """Where a user could hand us a private key: the admin form and the API's serializer."""
    from django.contrib import admin

    from api.serializers import DkimKeySerializer
    from domains.models import DkimKey

    found = []
    if "private_key" not in (admin.site._registry[DkimKey].exclude or []):
        found.append("admin")
    api_field = DkimKeySerializer().get_fields().get("private_key")
    if api_field is not None and not api_field.read_only:
        found.append("api")
    return found
