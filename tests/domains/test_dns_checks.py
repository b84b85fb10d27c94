"""The DNS wizard's live checks against a real nsd on loopback: one correct zone, one broken zone,
and every way a record goes wrong in the field, each with its verdict, found value and fix."""

from __future__ import annotations

import socket
import time

import dns.dnssec
import dns.rdtypes.dnskeybase
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from domains.dkim import create_key, generate_keypair
from domains.dns_checks import record_checks, required_ok, run_checks
from domains.models import DnsCheck
from domains.records import txt_strings
from tests.dns_server import SOA, LoopbackDns
from tests.domains.dns_fixtures import DjangoHttps, published_zone, serve_zones
from tests.support import need_program

pytestmark = pytest.mark.django_db


def verdicts(domain) -> dict:
    return {r.check: r for r in run_checks(domain)}


def replace_line(lines: list[str], marker: str, *new: str) -> list[str]:
    """The zone with every line containing `marker` replaced by `new`."""
    return [line for line in lines if marker not in line] + list(new)


def test_a_zone_published_as_the_wizard_says_passes_every_check(checker_dns, policy_server, example_org):
    checker_dns.zone("example.org", *published_zone(example_org))
    results = run_checks(example_org)
    selector = example_org.active_dkim_key().selector
    assert {r.check: r.status for r in results} == {
        "mx": "ok", "mx-host": "ok", "spf": "ok", f"dkim:{selector}": "ok", "dmarc": "ok", "ownership": "ok",
        "mta-sts": "ok", "mta-sts-policy": "ok", "tls-rpt": "ok", "srv-submissions": "ok",
        "srv-submission": "ok", "srv-imaps": "ok", "srv-pop3s": "ok", "autoconfig": "ok", "autodiscover": "ok",
        "ptr": "ok", "spamhaus-ip": "ok", "spamhaus-domain": "ok", "dnssec": "warning",
    }
    assert [r.check for r in results if r.required] == ["mx", "mx-host", "spf", f"dkim:{selector}", "dmarc"]
    assert required_ok(results)
    by_check = {r.check: r for r in results}
    assert by_check["mx"].found == "10 mail.mailhost.test"
    assert by_check["mx"].expected == "example.org MX 10 mail.mailhost.test"
    assert by_check["spf"].found == "v=spf1 mx ip4:127.0.0.1 -all"
    assert by_check["ptr"].found == "127.0.0.1 -> mail.mailhost.test"
    assert by_check["mta-sts-policy"].found == "version: STSv1; mode: enforce; mx: mail.mailhost.test; max_age: 604800"
    assert all(r.hint == "" for r in results if r.status == "ok")
    assert by_check["dnssec"].found == "unsigned (no DNSKEY)"


def test_a_broken_zone_gets_a_verdict_and_a_fix_for_every_check(checker_dns, policy_server, other_test):
    serve_zones(checker_dns, ptr="host.elsewhere.test.", zen=("1.0.0.127 IN A 127.255.255.254",),
                dbl=("other.test IN A 127.0.1.2",))
    checker_dns.zone(
        "other.test", "ns IN A 127.0.0.1",
        "@ IN MX 10 mx.other.test.", "mx IN A 192.0.2.1",
        '@ IN TXT "v=spf1 mx -all"', '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        '_smtp._tls IN TXT "v=TLSRPTv1;"',
        "_submissions._tcp IN SRV 0 0 0 .",
        "autoconfig IN A 192.0.2.1",
    )
    results = run_checks(other_test)
    by_check = {r.check: r for r in results}
    selector = other_test.active_dkim_key().selector
    assert {r.check: r.status for r in results} == {
        "mx": "error", "mx-host": "ok", "spf": "error", f"dkim:{selector}": "error", "dmarc": "error",
        "ownership": "warning", "mta-sts": "warning", "mta-sts-policy": "warning", "tls-rpt": "warning",
        "srv-submissions": "warning", "srv-submission": "warning", "srv-imaps": "warning", "srv-pop3s": "warning",
        "autoconfig": "warning", "autodiscover": "warning", "ptr": "warning", "spamhaus-ip": "warning",
        "spamhaus-domain": "warning", "dnssec": "warning",
    }
    assert not required_ok(results)
    assert all(r.hint for r in results if r.status != "ok")
    mx = by_check["mx"]
    assert mx.found == "10 mx.other.test"
    assert "Publish other.test MX 10 mail.mailhost.test" in mx.hint
    spf = by_check["spf"]
    assert spf.found == "v=spf1 mx -all | v=spf1 ip4:192.0.2.1 -all"
    assert "2 SPF records" in spf.hint and "v=spf1 mx ip4:127.0.0.1 -all" in spf.hint
    dkim = by_check[f"dkim:{selector}"]
    assert dkim.found == "(no DKIM record)"
    assert dkim.expected.startswith(f"{selector}._domainkey.other.test TXT v=DKIM1")
    assert by_check["dmarc"].found == "(no DMARC record)"
    assert "_dmarc.other.test TXT v=DMARC1; p=quarantine" in by_check["dmarc"].hint
    token = other_test.ownership_token
    assert by_check["ownership"].expected == f"_mailhost.other.test TXT mailhost-verification={token}"
    assert by_check["mta-sts-policy"].found.startswith("(cannot fetch: mta-sts.other.test")
    assert "lacks rua=" in by_check["tls-rpt"].hint
    assert by_check["srv-submissions"].found == "0 0 0 ."
    assert by_check["srv-imaps"].found == "(no SRV record)"
    assert by_check["autoconfig"].found == "192.0.2.1"
    assert by_check["ptr"].found == "127.0.0.1 -> host.elsewhere.test"
    assert "set its PTR to mail.mailhost.test" in by_check["ptr"].hint
    assert by_check["spamhaus-ip"].found == "127.0.0.1: 127.255.255.254 (unknown: Spamhaus refused the query)"
    assert "listing is unknown" in by_check["spamhaus-ip"].hint
    assert by_check["spamhaus-domain"].found == "other.test: 127.0.1.2"
    assert "is listed on dbl.spamhaus.org" in by_check["spamhaus-domain"].hint


@pytest.mark.parametrize(
    ("spf", "extra", "status", "says"),
    [
        ("v=spf1 ip4:192.0.2.1 -all", (), "error", "does not authorise this server's address 127.0.0.1"),
        ("v=spf1 mx +all", (), "error", "'+all' lets anyone send"),
        ("v=spf1 ip4:127.0.0.1 ?all", (), "error", "'?all' lets anyone send"),
        ("v=spf1 ip4:127.0.0.1", (), "error", "does not end in -all or ~all"),
        ("v=spf1 ip4:127.0.0.1 ~all", (), "ok", ""),
        ("v=spf1 include:_spf.example.org -all", ('_spf IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',), "ok", ""),
        (
            "v=spf1 " + " ".join(f"include:s{i}.example.org" for i in range(11)) + " ip4:127.0.0.1 -all",
            tuple(f's{i} IN TXT "v=spf1 -all"' for i in range(11)),
            "error", "at most 10 DNS-querying terms",
        ),
        ("v=spf1 a:v1.example.org a:v2.example.org a:v3.example.org ip4:127.0.0.1 -all", (), "error",
         "2 void lookups"),
    ],
    ids=["without-our-ip", "plus-all", "neutral-all", "no-all", "softfail-all", "include-authorises",
         "eleven-lookups", "void-lookups"],
)
def test_spf_is_evaluated_not_just_read(checker_dns, example_org, spf, extra, status, says):
    zone = replace_line(published_zone(example_org), "v=spf1", f"example.org. IN TXT {txt_strings(spf)}", *extra)
    checker_dns.zone("example.org", *zone)
    result = verdicts(example_org)["spf"]
    assert (result.status, result.found.split(" (")[0]) == (status, spf)
    assert says in result.hint
    assert required_ok(run_checks(example_org, only=("spf",))) is (status == "ok")


def test_an_mx_target_that_is_a_cname_is_an_error(checker_dns, example_org):
    zone = replace_line(published_zone(example_org), " MX ", "@ IN MX 10 mx.example.org.",
                        "mx IN CNAME mail.mailhost.test.")
    checker_dns.zone("example.org", *zone)
    result = verdicts(example_org)["mx"]
    assert result.status == "error"
    assert result.found == "10 mx.example.org"
    checker_dns.zone("example.org", *replace_line(zone, " MX ", "@ IN MX 10 mail.mailhost.test.",
                                                  "@ IN MX 20 mx.example.org."))
    result = verdicts(example_org)["mx"]
    assert result.status == "error"
    assert result.found == "10 mail.mailhost.test, 20 mx.example.org (mx.example.org is a CNAME to mail.mailhost.test)"
    assert "never a CNAME" in result.hint


def test_a_second_mx_elsewhere_is_a_warning_and_a_null_mx_an_error(checker_dns, example_org):
    zone = published_zone(example_org) + ["@ IN MX 20 backup.example.org.", "backup IN A 192.0.2.9"]
    checker_dns.zone("example.org", *zone)
    result = verdicts(example_org)["mx"]
    assert (result.status, result.found) == ("warning", "10 mail.mailhost.test, 20 backup.example.org")
    assert "backup.example.org never reaches the mailboxes here" in result.hint
    checker_dns.zone("example.org", *replace_line(zone, " MX ", "@ IN MX 0 ."))
    result = verdicts(example_org)["mx"]
    assert (result.status, result.found) == ("error", "0 . (null MX: the domain refuses all mail)")


def test_the_mail_host_must_resolve_to_our_addresses_and_not_through_a_cname(checker_dns, example_org):
    checker_dns.zone("example.org", *published_zone(example_org))
    checker_dns.zone("mailhost.test", "ns IN A 127.0.0.1", "mail IN CNAME real.mailhost.test.",
                     "real IN A 127.0.0.1")
    result = verdicts(example_org)["mx-host"]
    assert (result.status, result.found) == ("error", "127.0.0.1 via CNAME real.mailhost.test")
    assert result.required and result.expected == "mail.mailhost.test A 127.0.0.1"
    checker_dns.zone("mailhost.test", "ns IN A 127.0.0.1", "mail IN A 127.0.0.1", "mail IN A 192.0.2.7")
    result = verdicts(example_org)["mx-host"]
    assert (result.status, result.found) == ("error", "127.0.0.1, 192.0.2.7")
    assert "192.0.2.7 is not this server" in result.hint


def test_dkim_must_match_our_public_key_exactly(checker_dns, example_org):
    key = example_org.active_dkim_key()
    _, other_public = generate_keypair("rsa-2048")
    zone = replace_line(published_zone(example_org), "_domainkey",
                        f'{key.selector}._domainkey IN TXT "v=DKIM1; k=rsa; p={other_public[:200]}" '
                        f'"{other_public[200:]}"')
    checker_dns.zone("example.org", *zone)
    result = verdicts(example_org)[f"dkim:{key.selector}"]
    assert result.status == "error" and result.required
    assert "differs from this server's key" in result.hint


def test_a_new_dkim_key_is_pending_until_published(checker_dns, example_org):
    zone = published_zone(example_org)
    checker_dns.zone("example.org", *zone)
    new = create_key(example_org)
    result = verdicts(example_org)[f"dkim:{new.selector}"]
    assert (result.status, result.required, result.found) == ("pending", False, "(no DKIM record)")
    checker_dns.zone("example.org", *published_zone(example_org))
    assert verdicts(example_org)[f"dkim:{new.selector}"].status == "ok"


@pytest.mark.parametrize(
    ("records", "status", "says"),
    [
        (('"v=DMARC1; p=none"',), "warning", "p=none only monitors"),
        (('"v=DMARC1; rua=mailto:x@example.org"',), "error", "no valid p= policy"),
        (('"v=DMARC1; p=reject"', '"v=DMARC1; p=none"'), "error", "2 DMARC records mean no policy"),
    ],
    ids=["monitor-only", "no-policy", "twice"],
)
def test_dmarc_needs_exactly_one_record_with_a_policy(checker_dns, example_org, records, status, says):
    zone = replace_line(published_zone(example_org), "_dmarc", *(f"_dmarc IN TXT {r}" for r in records))
    checker_dns.zone("example.org", *zone)
    result = verdicts(example_org)["dmarc"]
    assert result.status == status and says in result.hint


def test_ptr_must_resolve_back_to_our_address(checker_dns, example_org, settings):
    checker_dns.zone("example.org", *published_zone(example_org))
    checker_dns.zone("mailhost.test", "ns IN A 127.0.0.1", "mail IN A 127.0.0.2")
    result = verdicts(example_org)["ptr"]
    assert (result.status, result.found) == ("warning", "127.0.0.1 -> mail.mailhost.test")
    assert "mail.mailhost.test does not resolve back to 127.0.0.1" in result.hint


@pytest.mark.parametrize(
    ("zen", "dbl", "ip_found", "domain_found", "says"),
    [
        ("127.0.0.2", None, "127.0.0.1: 127.0.0.2", "example.org: not listed", "127.0.0.1 is listed on zen"),
        ("127.255.255.252", None, "127.0.0.1: 127.255.255.252 (unknown: Spamhaus refused the query)",
         "example.org: not listed", "listing is unknown"),
        (None, "127.255.255.255", "127.0.0.1: not listed",
         "example.org: 127.255.255.255 (unknown: Spamhaus refused the query)", "listing is unknown"),
        (None, "127.0.1.102", "127.0.0.1: not listed", "example.org: 127.0.1.102", "example.org is listed on dbl"),
    ],
    ids=["ip-listed", "ip-error-code", "domain-error-code", "domain-listed"],
)
def test_spamhaus_listings_and_error_codes_are_told_apart(checker_dns, example_org, zen, dbl, ip_found,
                                                           domain_found, says):
    serve_zones(checker_dns, zen=(f"1.0.0.127 IN A {zen}",) if zen else (),
                dbl=(f"example.org IN A {dbl}",) if dbl else ())
    checker_dns.zone("example.org", *published_zone(example_org))
    results = verdicts(example_org)
    assert (results["spamhaus-ip"].status, results["spamhaus-ip"].found) == ("ok" if not zen else "warning", ip_found)
    assert (results["spamhaus-domain"].status, results["spamhaus-domain"].found) == (
        "ok" if not dbl else "warning", domain_found)
    assert says in results["spamhaus-ip"].hint + results["spamhaus-domain"].hint
    assert required_ok(list(results.values()))


def test_an_mta_sts_policy_in_testing_mode_or_not_served_is_a_warning(checker_dns, policy_server, example_org):
    checker_dns.zone("example.org", *published_zone(example_org))
    policy_server.body = "version: STSv1\r\nmode: testing\r\nmx: mail.mailhost.test\r\nmax_age: 86400\r\n"
    result = verdicts(example_org)["mta-sts-policy"]
    assert result.status == "warning" and "mode is testing, not enforce" in result.hint
    policy_server.body, policy_server.status = "gone", 404
    result = verdicts(example_org)["mta-sts-policy"]
    assert result.status == "warning" and result.found.startswith("(cannot fetch: HTTP 404")


def test_an_mta_sts_policy_behind_an_untrusted_certificate_is_not_accepted(checker_dns, policy_server,
                                                                           example_org, settings):
    checker_dns.zone("example.org", *published_zone(example_org))
    settings.MTA_STS_CA_FILE = ""  # the system's CAs do not know the test CA
    result = verdicts(example_org)["mta-sts-policy"]
    assert result.status == "warning" and "CERTIFICATE_VERIFY_FAILED" in result.found


@pytest.mark.django_db(transaction=True)
def test_the_policy_this_server_serves_passes_the_check(checker_dns, example_org, settings, tmp_path):
    """End to end: DNS CNAME -> our host -> HTTPS -> the per-Host view -> the checker's verdict."""
    server = DjangoHttps(tmp_path, ["mta-sts.example.org"])
    try:
        settings.ALLOWED_HOSTS = [".example.org"]
        settings.MTA_STS_HTTPS_PORT, settings.MTA_STS_CA_FILE = server.port, str(server.ca_file)
        checker_dns.zone("example.org", *published_zone(example_org))
        result = verdicts(example_org)["mta-sts-policy"]
        assert (result.status, result.found) == (
            "ok", "version: STSv1; mode: enforce; mx: mail.mailhost.test; max_age: 604800")
        example_org.active = False
        example_org.save()
        result = verdicts(example_org)["mta-sts-policy"]
        assert (result.status, result.found) == ("warning", "(cannot fetch: HTTP 404 (only 200 counts; redirects "
                                                            "are not followed))")
    finally:
        server.close()


def _signed_zone_lines(origin: str, lines: list[str]) -> list[str]:
    """The zone signed with dnspython: the lines nsd serves, less the SOA/NS the fixture writes."""
    text = f"$ORIGIN {origin}.\n$TTL 60\n" + SOA.format(origin=origin) + "\n".join(lines) + "\n"
    zone = dns.zone.from_text(text, origin, relativize=False)
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256,
                                    flags=dns.rdtypes.dnskeybase.Flag.ZONE | dns.rdtypes.dnskeybase.Flag.SEP)
    with zone.writer() as txn:
        dns.dnssec.sign_zone(zone, txn, keys=[(key, dnskey)], lifetime=86400)
    return [line for line in zone.to_text(relativize=False).splitlines()
            if not line.startswith((f"{origin}. 300 IN SOA", f"{origin}. 300 IN NS"))]


def test_dnssec_is_reported_as_information(checker_dns, example_org):
    checker_dns.zone("example.org", *_signed_zone_lines("example.org", published_zone(example_org)))
    results = verdicts(example_org)
    assert (results["dnssec"].status, results["dnssec"].found) == ("ok", "signed (1 DNSKEY), not validated")
    assert not results["dnssec"].required and results["mx"].status == "ok"


def test_the_authoritative_servers_win_over_a_stale_resolver(checker_dns, example_org, settings, tmp_path):
    """A caching resolver still says "no DKIM" after the owner published it (Modoboa #1647)."""
    stale_dir = tmp_path / "stale"
    stale_dir.mkdir()
    stale = LoopbackDns(stale_dir, need_program("nsd"))
    stale.zones["example.org"] = replace_line(published_zone(example_org), "_domainkey")
    stale.zones["mailhost.test"] = ["mail IN A 127.0.0.1"]
    stale.restart()
    try:
        settings.DNS_RESOLVERS = [("127.0.0.1", stale.port)]
        checker_dns.zone("example.org", *published_zone(example_org))
        selector = example_org.active_dkim_key().selector
        assert verdicts(example_org)[f"dkim:{selector}"].status == "ok"
        settings.DNS_AUTHORITATIVE_PORT = stale.port
        assert verdicts(example_org)[f"dkim:{selector}"].status == "error"
    finally:
        stale.stop()


def test_a_silent_dns_server_ends_in_errors_within_the_time_bound(example_org, settings):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        settings.DNS_RESOLVERS = [("127.0.0.1", blackhole.getsockname()[1])]
        settings.DNS_CHECK_TIMEOUT = 1
        started = time.monotonic()
        results = run_checks(example_org)
        assert time.monotonic() - started < 3
    assert not required_ok(results)
    assert {r.status for r in results if r.required} == {"error"}
    assert {r.status for r in results if not r.required} == {"warning"}
    mx = next(r for r in results if r.check == "mx")
    assert mx.found.startswith(("(no answer within 1 s)", "(lookup failed")) and "check again" in mx.hint


def test_a_stored_run_flags_what_changed_and_verifies_ownership(checker_dns, example_org):
    zone = published_zone(example_org)
    checker_dns.zone("example.org", *replace_line(zone, "_mailhost"))
    record_checks(example_org)
    example_org.refresh_from_db()
    assert example_org.ownership_verified_at is None
    assert DnsCheck.objects.get(domain=example_org, key="ownership").status == "warning"
    assert not DnsCheck.objects.filter(changed=True).exists()

    checker_dns.zone("example.org", *replace_line(zone, "_dmarc"))
    record_checks(example_org)
    example_org.refresh_from_db()
    assert example_org.ownership_verified_at is not None
    changed = {row.key: (row.previous_status, row.status) for row in DnsCheck.objects.filter(changed=True)}
    assert changed == {"ownership": ("warning", "ok"), "dmarc": ("ok", "error")}
    assert DnsCheck.objects.filter(domain=example_org).count() == len(run_checks(example_org))
