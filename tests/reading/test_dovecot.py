"""IMAP and POP3 through a real Dovecot, configured by `dovecotconf`, on the Maildir tree SMTP fills."""

from __future__ import annotations

import email
import imaplib
import io
import poplib
import pwd

import pytest
from django.core.management import CommandError, call_command

from mailboxes.models import Mailbox, RelayCredential
from mailboxes.provisioning import create_mailbox
from tests.support import PASSWORD

from .conftest import RemoteIMAP, RemotePOP3, deliver

pytestmark = pytest.mark.slow


def message(subject: str, body: str = "Hello from the tests.\r\n", size: int = 0) -> bytes:
    text = (f"From: Sender <sender@remote.test>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n{body}")
    return (text + "x" * size + "\r\n").encode()


def imap_subjects(client: imaplib.IMAP4, folder: str = "INBOX") -> list[str]:
    client.select(folder)
    _, data = client.search(None, "ALL")
    subjects = []
    for num in data[0].split():
        _, parts = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects.append(email.message_from_bytes(parts[0][1])["Subject"])
    return subjects


def test_it_serves_a_delivered_message_over_imap_with_the_mailbox_password(dovecot, bob):
    deliver(bob, message("First over IMAP"))
    client = dovecot.imap("Bob@Example.org", PASSWORD)
    assert imap_subjects(client) == ["First over IMAP"]
    _, parts = client.fetch(b"1", "(RFC822)")
    assert b"Hello from the tests." in parts[0][1]
    client.logout()


def test_it_serves_a_delivered_message_over_pop3_with_an_app_password(dovecot, bob):
    _, secret = RelayCredential.issue(domain=bob.domain, mailbox=bob, label="phone")
    deliver(bob, message("Over POP3"))
    client = dovecot.pop3("bob@example.org", secret)
    count, _ = client.stat()
    assert count == 1
    _, lines, _ = client.retr(1)
    assert b"Subject: Over POP3" in lines
    client.quit()


def test_it_accepts_an_app_password_over_imap_and_the_mailbox_password_over_pop3(dovecot, bob):
    _, secret = RelayCredential.issue(domain=bob.domain, mailbox=bob, label="laptop")
    deliver(bob, message("Both ways"))
    client = dovecot.imap("bob@example.org", secret)
    assert imap_subjects(client) == ["Both ways"]
    client.logout()
    pop = dovecot.pop3("bob@example.org", PASSWORD)
    assert pop.stat()[0] == 1
    pop.quit()


def test_it_refuses_a_wrong_password_and_a_revoked_app_password(dovecot, bob):
    # Dovecot doubles the delay after each failure from one address: two attempts keep this fast.
    cred, secret = RelayCredential.issue(domain=bob.domain, mailbox=bob, label="old phone")
    cred.revoke()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        dovecot.imap("bob@example.org", "wrong password")
    with pytest.raises(poplib.error_proto):
        dovecot.pop3("bob@example.org", secret)


def test_it_refuses_a_suspended_mailbox_and_a_suspended_domain(dovecot, bob):
    Mailbox.objects.filter(pk=bob.pk).update(active=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        dovecot.imap("bob@example.org", PASSWORD)
    Mailbox.objects.filter(pk=bob.pk).update(active=True)
    dovecot.imap("bob@example.org", PASSWORD).logout()
    bob.domain.active = False
    bob.domain.save()
    with pytest.raises(poplib.error_proto):
        dovecot.pop3("bob@example.org", PASSWORD)


def test_it_refuses_a_plaintext_login_before_starttls(dovecot, bob):
    client = RemoteIMAP("127.0.0.1", dovecot.imap_port, timeout=15)
    assert "LOGINDISABLED" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login("bob@example.org", PASSWORD)
    client.logout()
    pop = RemotePOP3("127.0.0.1", dovecot.pop3_port, timeout=15)
    with pytest.raises(poplib.error_proto):
        pop.user("bob@example.org")
        pop.pass_(PASSWORD)
    pop.close()


def test_no_user_reads_another_users_mailbox(dovecot, bob, other_test):
    carol = create_mailbox("carol@other.test", PASSWORD + "!")
    deliver(bob, message("For Bob only"))
    client = dovecot.imap("carol@other.test", PASSWORD + "!")
    assert imap_subjects(client) == []
    for name in ("../../example.org/bob", "~bob@example.org", "/" + str(bob.maildir)):
        typ, _ = client.select(f'"{name}"')
        assert typ == "NO"
    client.logout()
    with pytest.raises(imaplib.IMAP4.error):
        dovecot.imap("bob@example.org", PASSWORD + "!")
    assert carol.maildir != bob.maildir


def test_it_announces_and_enforces_the_mailbox_quota(dovecot, bob):
    Mailbox.objects.filter(pk=bob.pk).update(quota=4096)
    client = dovecot.imap("bob@example.org", PASSWORD)
    _, data = client.getquotaroot("INBOX")
    assert b"STORAGE 0 4" in data[1][0]
    typ, _ = client.append("INBOX", None, None, message("Small"))
    assert typ == "OK"
    typ, data = client.append("INBOX", None, None, message("Too big", size=8000))
    assert typ == "NO" and b"OVERQUOTA" in data[0]
    client.logout()


def test_quota_usage_stays_true_after_an_imap_delete(dovecot, bob, client):
    deliver(bob, message("Keep me"))
    deliver(bob, message("Delete me", size=20000))
    bob.refresh_from_db()
    assert bob.used_bytes > 20000
    imap = dovecot.imap("bob@example.org", PASSWORD)
    imap.select("INBOX")
    _, found = imap.search(None, 'SUBJECT "Delete me"')
    imap.store(found[0], "+FLAGS", "\\Deleted")
    imap.expunge()
    imap.logout()
    client.force_login(bob.user)
    response = client.get("/webmail/")
    assert response.status_code == 200
    bob.refresh_from_db()
    assert bob.used_bytes == len(message("Keep me"))


def test_dovecotconf_reads_a_root_owned_mail_root_as_the_mail_account_and_warns(settings, tmp_path, db):
    import os

    if os.geteuid() != 0:
        pytest.skip("only root can make a root-owned MAIL_ROOT")
    settings.MAIL_ROOT = tmp_path / "rootmail"
    out, err = io.StringIO(), io.StringIO()
    call_command("dovecotconf", "--base-dir", str(tmp_path / "d"), stdout=out, stderr=err)
    mail = pwd.getpwnam("mail")
    assert f"mail_uid = {mail.pw_uid}" in out.getvalue() and "mail_location" in out.getvalue()
    assert "owned by root" in err.getvalue() and "chown" in err.getvalue()


def test_dovecotconf_reads_mail_as_the_account_it_is_told(tmp_path, db):
    out = io.StringIO()
    call_command("dovecotconf", "--base-dir", str(tmp_path / "d"), "--mail-user", "nobody", stdout=out)
    assert f"mail_uid = {pwd.getpwnam('nobody').pw_uid}" in out.getvalue()
    with pytest.raises(CommandError, match="never reads mail as root"):
        call_command("dovecotconf", "--base-dir", str(tmp_path / "d"), "--mail-user", "root", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no account"):
        call_command("dovecotconf", "--base-dir", str(tmp_path / "d"), "--mail-user", "no-such-user-x",
                     stdout=io.StringIO())


def test_dovecotconf_sets_production_ports_by_flag(tmp_path, db):
    out = io.StringIO()
    call_command("dovecotconf", "--base-dir", str(tmp_path / "d"), "--imap", "0.0.0.0:143",
                 "--pop3", "0.0.0.0:110", "--imaps", "0.0.0.0:993", "--pop3s", "[::]:995", stdout=out)
    conf = out.getvalue()
    assert "port = 143" in conf and "port = 110" in conf
    assert "port = 993\n    ssl = yes" in conf and "address = ::\n    port = 995\n    ssl = yes" in conf
    assert "disable_plaintext_auth = yes" in conf
    with pytest.raises(CommandError, match="--imap"):
        call_command("dovecotconf", "--base-dir", str(tmp_path / "d"), "--imap", "nonsense", stdout=out)


def test_mail_delivered_over_smtp_is_read_over_imap_and_submitted_mail_over_pop3(dovecot, smtp_service, bob,
                                                                                   mail_root):
    import smtplib

    from tests.smtp_fixtures import client_tls

    from .conftest import hand_to_mail_account

    carol = create_mailbox("carol@example.org", PASSWORD)
    with smtplib.SMTP("127.0.0.1", smtp_service.inbound, timeout=15) as mx:
        mx.sendmail("sender@remote.test", ["bob@example.org"], message("Over the MX"))
    _, secret = RelayCredential.issue(domain=bob.domain, mailbox=bob, label="mail app")
    with smtplib.SMTP("127.0.0.1", smtp_service.submission, timeout=15) as submission:
        submission.starttls(context=client_tls())
        submission.login("bob@example.org", secret)
        data = message("Submitted").replace(b"From: Sender <sender@remote.test>", b"From: bob@example.org")
        submission.sendmail("bob@example.org", ["carol@example.org"], data)
    hand_to_mail_account(mail_root)

    imap = dovecot.imap("bob@example.org", PASSWORD)
    assert imap_subjects(imap) == ["Over the MX"]
    _, parts = imap.fetch(b"1", "(BODY.PEEK[HEADER])")
    assert b"Received: " in parts[0][1]
    imap.logout()
    pop = dovecot.pop3("carol@example.org", PASSWORD)
    _, lines, _ = pop.retr(1)
    assert b"Subject: Submitted" in lines
    pop.quit()
    assert carol.maildir.exists()


def test_the_auth_program_carries_a_database_url_that_survives_odd_passwords():
    import environ

    from mailboxes.dovecot import database_url

    parsed = environ.Env.db_url_config(database_url({
        "ENGINE": "django.db.backends.postgresql", "USER": "mail host", "PASSWORD": "p@ss:w/rd#1",
        "HOST": "db.internal", "PORT": 5433, "NAME": "mailhost"}))
    assert (parsed["USER"], parsed["PASSWORD"], parsed["HOST"], parsed["PORT"], parsed["NAME"]) == (
        "mail host", "p@ss:w/rd#1", "db.internal", 5433, "mailhost")
