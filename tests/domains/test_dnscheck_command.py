"""`python manage.py dnscheck NAME [--json]` as the contract says, run as a user runs it."""

import json
import socket
import subprocess
import sys

import pytest

from tests.domains.dns_fixtures import published_zone
from tests.support import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def dnscheck(*args: str, dns_port: int) -> subprocess.CompletedProcess:
    env = subprocess_env(DNS_RESOLVERS=f"127.0.0.1:{dns_port}", DNS_AUTHORITATIVE_PORT=str(dns_port),
                         MAIL_PUBLIC_IPS="127.0.0.1", DNS_CHECK_TIMEOUT="3")
    return subprocess.run([sys.executable, "manage.py", "dnscheck", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_correct_zone_exits_0_with_one_line_per_check_despite_warnings(checker_dns, example_org):
    checker_dns.zone("example.org", *published_zone(example_org))
    result = dnscheck("example.org", dns_port=checker_dns.port)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 19
    assert lines[0].split()[:4] == ["OK", "mx", "found:", "10"]
    # no MTA-STS policy server runs here: a warning on a recommended record keeps exit 0
    policy = next(line for line in lines if line.split()[1] == "mta-sts-policy")
    assert policy.startswith("WARNING") and "fix:" in policy


def test_json_output_is_a_list_of_check_status_found_expected_hint(checker_dns, example_org):
    checker_dns.zone("example.org", *published_zone(example_org))
    result = dnscheck("exAMple.org", "--json", dns_port=checker_dns.port)
    assert result.returncode == 0, result.stderr
    checks = json.loads(result.stdout)
    assert all(set(c) == {"check", "status", "found", "expected", "hint"} for c in checks)
    assert {c["status"] for c in checks} <= {"ok", "warning", "error", "pending"}
    mx = checks[0]
    assert mx == {"check": "mx", "status": "ok", "found": "10 mail.mailhost.test",
                  "expected": "example.org MX 10 mail.mailhost.test", "hint": ""}


def test_a_missing_required_record_exits_1_and_says_how_to_fix_it(checker_dns, example_org):
    zone = [line for line in published_zone(example_org) if "_dmarc" not in line]
    checker_dns.zone("example.org", *zone)
    result = dnscheck("example.org", "--json", dns_port=checker_dns.port)
    assert result.returncode == 1
    dmarc = next(c for c in json.loads(result.stdout) if c["check"] == "dmarc")
    assert dmarc["status"] == "error" and dmarc["found"] == "(no DMARC record)"
    assert dmarc["hint"].startswith("Publish _dmarc.example.org TXT v=DMARC1;")


def test_records_that_cannot_be_looked_up_exit_1(example_org):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        result = dnscheck("example.org", dns_port=blackhole.getsockname()[1])
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("ERROR    mx")


def test_an_unknown_domain_is_a_clear_error(checker_dns, example_org):
    result = dnscheck("not-hosted.test", dns_port=checker_dns.port)
    assert result.returncode == 2
    assert "not-hosted.test is not a hosted domain" in result.stderr
    assert dnscheck("bad/name", dns_port=checker_dns.port).returncode == 2
