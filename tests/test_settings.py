"""Settings come from the environment, each with a working default (DESIGN.md contract)."""

import json
import os
import subprocess
import sys

from tests.support import ROOT

PROBE = """
import json, django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST", ""),
    "mail_root": str(settings.MAIL_ROOT), "hostname": settings.MAIL_HOSTNAME,
    "ips": settings.MAIL_PUBLIC_IPS, "resolvers": settings.DNS_RESOLVERS,
    "outbound_port": settings.SMTP_OUTBOUND_PORT, "relay": settings.SMTP_RELAY_HOST,
    "broker": settings.CELERY_BROKER_URL, "debug": settings.DEBUG,
    "prepare_threshold": db.get("OPTIONS", {}).get("prepare_threshold", "unset"),
}))
"""

CONTRACT_VARS = ["DATABASE_URL", "CELERY_BROKER_URL", "MAIL_ROOT", "MAIL_HOSTNAME", "MAIL_PUBLIC_IPS",
                 "DNS_RESOLVERS", "SMTP_OUTBOUND_PORT", "SMTP_RELAY_HOST", "SMTP_TLS_CERT",
                 "SMTP_TLS_KEY", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"]


def load(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARS}
    base.update(env, DJANGO_SETTINGS_MODULE="mailhost.settings")
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env={**base, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    return result


def test_defaults_need_no_server_and_are_relative_to_the_project(tmp_path):
    result = load(tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["engine"] == "mailhost.sqlite3"
    assert got["name"] == str(ROOT / "var" / "db.sqlite3")
    assert got["mail_root"] == str(ROOT / "var" / "mail")
    assert got["broker"] == "filesystem://"
    assert got["outbound_port"] == 25 and got["relay"] is None
    assert got["hostname"] and got["resolvers"] == [] and got["ips"] == []


def test_every_contract_variable_is_read_from_the_environment(tmp_path):
    result = load(
        tmp_path,
        DATABASE_URL="postgres://mh:pw@db.internal:5433/mailhost",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/3",
        MAIL_ROOT="/srv/mail", MAIL_HOSTNAME="mx.example.net",
        MAIL_PUBLIC_IPS="192.0.2.1, 2001:db8::1",
        DNS_RESOLVERS="127.0.0.1:5353,[::1]:53,10.0.0.1",
        SMTP_OUTBOUND_PORT="2525", SMTP_RELAY_HOST="smarthost.test:587", DEBUG="false",
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["engine"] == "django.db.backends.postgresql" and got["host"] == "db.internal"
    assert got["broker"] == "redis://127.0.0.1:6379/3"
    assert got["mail_root"] == "/srv/mail" and got["hostname"] == "mx.example.net"
    assert got["ips"] == ["192.0.2.1", "2001:db8::1"]
    assert got["resolvers"] == [["127.0.0.1", 5353], ["::1", 53], ["10.0.0.1", 53]]
    assert got["outbound_port"] == 2525 and got["relay"] == ["smarthost.test", 587]
    assert got["debug"] is False
    assert got["prepare_threshold"] == 5, "psycopg prepares the queue's repeated statements by default"


def test_prepared_statements_on_postgresql_can_be_turned_off_for_pgbouncer(tmp_path):
    result = load(tmp_path, DATABASE_URL="postgres://mh:pw@db.internal:5433/mailhost?prepare_threshold=off")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prepare_threshold"] is None


def test_a_bad_value_names_the_variable(tmp_path):
    for name, value in [("DNS_RESOLVERS", "not-an-ip"), ("MAIL_PUBLIC_IPS", "mail.example"),
                        ("SMTP_RELAY_HOST", "smarthost-without-port")]:
        result = load(tmp_path, **{name: value})
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and name in result.stderr
