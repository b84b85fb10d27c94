"""Shared actors and real components for the whole suite.

Actors (STYLE.md): alice administers example.org, bob is a mailbox in example.org, charlie
administers other.test. Every portal and API test shows charlie getting 404 for example.org.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.dns_server import dns_server  # noqa: F401 - fixture for DNS-dependent tests
from tests.smtp_fixtures import _module_smtp_service, shared_smtp_service, smtp_service, smtp_service_factory  # noqa: F401,E501
from tests.support import PASSWORD, ROOT, free_port, need_program, subprocess_env, wait_for_port  # noqa: F401


@pytest.fixture(autouse=True)
def mail_root(settings, tmp_path):
    """Each test gets its own Maildir tree and a fixed host name."""
    settings.MAIL_ROOT = tmp_path / "mail"
    settings.MAIL_HOSTNAME = "mail.mailhost.test"
    settings.MAIL_PUBLIC_IPS = ["127.0.0.1"]
    return settings.MAIL_ROOT


@pytest.fixture(autouse=True)
def forget_remembered_domains():
    """Domains and DKIM keys are remembered per process for a few seconds and forgotten when a
    row is saved; a test's rolled-back rows send no signal, so start every test afresh."""
    from delivery import signing, webhooks
    from mailboxes import directory

    signing.forget_hosted_domains()
    directory.forget_hosted_domains()
    webhooks.forget()


@pytest.fixture(autouse=True)
def no_delivery_lanes_left():
    """A test that delivered to several destinations at once leaves delivery threads with
    database connections open (PostgreSQL would refuse to drop the test database under them),
    and connections parked by one test must not serve the next one; nor may a kick one test's
    mail left waiting for its interval reach the broker during the next."""
    yield
    from delivery import outbound, queue

    outbound.stop_lanes()
    outbound.close_parked()
    queue.cancel_pending_kick()


@pytest.fixture(scope="session", autouse=True)
def flush_outlasts_a_late_bookkeeping_write():
    """A transactional test ends with Django's flush: one TRUNCATE of every table, its locks
    taken in set order (random per process). A module's shared SMTP service may still commit
    the previous test's bookkeeping then (a log row and a quota counter, up to
    db_writes.BOOKKEEPING_DELAY after the 250), and on PostgreSQL the two can deadlock, the
    TRUNCATE being the one cancelled. Production never truncates; here the flush is retried."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self, **options):
        for attempt in range(3):
            try:
                return original(self, **options)
            except CommandError as exc:
                if attempt == 2 or "deadlock detected" not in str(exc.__cause__):
                    raise
                time.sleep(0.5)

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


@pytest.fixture
def example_org(db):
    from domains.provisioning import create_domain

    return create_domain("example.org")


@pytest.fixture
def other_test(db):
    from domains.provisioning import create_domain

    return create_domain("other.test")


@pytest.fixture
def bob(example_org):
    from mailboxes.provisioning import create_mailbox

    return create_mailbox("bob@example.org", PASSWORD, display_name="Bob")


@pytest.fixture
def alice(example_org):
    from mailboxes.models import User

    user = User.objects.create_user("alice", "alice@admins.test", PASSWORD)
    example_org.admins.add(user)
    return user


@pytest.fixture
def charlie(other_test):
    from mailboxes.models import User

    user = User.objects.create_user("charlie", "charlie@admins.test", PASSWORD)
    other_test.admins.add(user)
    return user


@pytest.fixture
def superadmin(db):
    from mailboxes.models import User

    return User.objects.create_superuser("root", "root@admins.test", PASSWORD)


@pytest.fixture
def celery_worker_process(transactional_db):
    """A real Celery worker (with beat) on the configured broker, seeing the test database."""
    env = subprocess_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mailhost", "worker", "--pool=solo",
         "--without-gossip", "--without-mingle", "--loglevel=INFO"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
