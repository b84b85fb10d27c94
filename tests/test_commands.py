"""The provisioning commands of the contract, run as a user runs them: `python manage.py …`."""

import subprocess
import sys

import pytest

from domains.models import Domain
from mailboxes.models import Alias, Mailbox, User
from tests.support import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=subprocess_env(MAIL_PUBLIC_IPS="192.0.2.25"),
        input=stdin, capture_output=True, text=True, timeout=60,
    )


def test_createdomain_stores_the_a_label_and_prints_zone_file_lines():
    result = manage("createdomain", "exämple.test")
    assert result.returncode == 0, result.stderr
    assert Domain.objects.filter(name="xn--exmple-cua.test").exists()
    lines = result.stdout.splitlines()
    assert "xn--exmple-cua.test. 3600 IN MX 10 mail.mailhost.test." in lines
    assert "xn--exmple-cua.test. 3600 IN TXT \"v=spf1 mx ip4:192.0.2.25 -all\"" in lines
    assert "mail.mailhost.test. 3600 IN A 192.0.2.25" in lines
    dkim = next(line for line in lines if "._domainkey." in line)
    owner, ttl, klass, rtype, value = dkim.split(" ", 4)
    assert owner.endswith("._domainkey.xn--exmple-cua.test.") and (ttl, klass, rtype) == ("3600", "IN", "TXT")
    strings = value.split('" "')
    assert len(strings) > 1 and all(len(s.strip('"')) <= 255 for s in strings)


def test_createdomain_refuses_a_duplicate_and_a_bad_name():
    assert manage("createdomain", "example.org").returncode == 0
    again = manage("createdomain", "EXAMPLE.ORG")
    assert again.returncode != 0 and "already hosted" in again.stderr
    bad = manage("createdomain", "exa/mple.org")
    assert bad.returncode != 0 and "'/'" in bad.stderr
    assert Domain.objects.count() == 1


def test_createmailbox_refuses_a_path_trick_and_writes_nothing(example_org):
    result = manage("createmailbox", "a/../b@exämple.test", "--password", "long enough pw")
    assert result.returncode != 0
    assert "local part contains" in result.stderr
    assert not User.objects.filter(username__contains="b@").exists()


def test_createmailbox_refuses_an_unhosted_domain(example_org):
    result = manage("createmailbox", "bob@not-hosted.test", "--password", "long enough pw")
    assert result.returncode != 0
    assert "not-hosted.test is not a hosted domain" in result.stderr
    assert not Mailbox.objects.exists() and not User.objects.exists()


def test_createmailbox_reads_the_password_from_stdin_without_its_newline(example_org):
    result = manage("createmailbox", "Bob@Example.org", "--password-stdin", "--quota", "500M",
                    stdin="pass from stdin\nsecond line\n")
    assert result.returncode == 0, result.stderr
    mailbox = Mailbox.objects.get()
    assert mailbox.address == "bob@example.org" and mailbox.quota == 500 * 1024**2
    assert mailbox.user.check_password("pass from stdin")


def test_createmailbox_refuses_a_short_password(example_org):
    result = manage("createmailbox", "bob@example.org", "--password", "short")
    assert result.returncode != 0 and "at least 8 characters" in result.stderr
    assert not User.objects.exists()


def test_createalias_accepts_local_and_remote_destinations(bob):
    result = manage("createalias", "Info@example.org", "bob@example.org", "Ext@Remote.test")
    assert result.returncode == 0, result.stderr
    alias = Alias.objects.get()
    assert alias.address == "info@example.org"
    assert alias.destinations == ["bob@example.org", "ext@remote.test"]


def test_createalias_refuses_an_unhosted_source(bob):
    result = manage("createalias", "info@elsewhere.test", "bob@example.org")
    assert result.returncode != 0 and "not a hosted domain" in result.stderr


def test_grantadmin_makes_a_mailbox_a_domain_admin(bob, other_test):
    result = manage("grantadmin", "bob@example.org", "other.test")
    assert result.returncode == 0, result.stderr
    assert list(bob.user.administered_domains.all()) == [other_test]
    missing = manage("grantadmin", "nobody@example.org", "other.test")
    assert missing.returncode != 0 and "no account" in missing.stderr
