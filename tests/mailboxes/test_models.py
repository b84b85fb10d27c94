"""Model constraints: uniqueness, limits, quotas, credentials and send-as rules."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from domains.models import DkimKey, Domain, DomainAlias
from domains.provisioning import create_domain
from mailboxes import passwords
from mailboxes.models import Alias, Mailbox, RelayCredential, User
from mailboxes.provisioning import create_alias, create_mailbox
from tests.support import PASSWORD


def test_a_domain_is_unique(example_org):
    with pytest.raises(ValidationError, match="already hosted"):
        create_domain("EXAMPLE.org")
    with pytest.raises(IntegrityError), transaction.atomic():
        Domain.objects.create(name="example.org")


def test_a_new_domain_gets_an_active_rsa_dkim_key(example_org):
    key = example_org.active_dkim_key()
    assert key.algorithm == DkimKey.Algorithm.RSA2048
    assert key.txt_value.startswith("v=DKIM1; k=rsa; p=MIIB")
    assert "PRIVATE KEY" in key.private_key


def test_a_mailbox_address_is_unique_whatever_the_case(bob):
    with pytest.raises(ValidationError, match="already exists"):
        create_mailbox("BOB@Example.org", PASSWORD)
    with pytest.raises(IntegrityError), transaction.atomic():
        Mailbox.objects.create(user=User.objects.create(username="x"), domain=bob.domain,
                               local_part="bob")


def test_a_mailbox_password_is_argon2id_that_dovecot_can_read(bob):
    stored = bob.user.password
    assert stored.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.dovecot_scheme(stored).startswith("{ARGON2ID}$argon2id$v=19$")
    assert bob.user.check_password(PASSWORD)


def test_an_old_password_hash_is_upgraded_on_login(bob):
    from django.contrib.auth import authenticate
    from django.contrib.auth.hashers import make_password

    bob.user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    bob.user.save()
    assert authenticate(username="Bob@EXAMPLE.org", password=PASSWORD) == bob.user
    bob.user.refresh_from_db()
    assert bob.user.password.startswith("argon2$argon2id$")


def test_a_suspended_mailbox_cannot_log_in(bob):
    from django.contrib.auth import authenticate

    bob.active = False
    bob.save()
    assert authenticate(username="bob@example.org", password=PASSWORD) is None


def test_short_passwords_are_refused(example_org):
    with pytest.raises(ValidationError, match="at least 8"):
        create_mailbox("short@example.org", "1234567")
    assert not User.objects.filter(username="short@example.org").exists()


def test_the_domain_mailbox_limit_is_enforced(example_org):
    example_org.max_mailboxes = 1
    example_org.save()
    create_mailbox("one@example.org", PASSWORD)
    with pytest.raises(ValidationError, match="maximum of 1 mailboxes"):
        create_mailbox("two@example.org", PASSWORD)
    assert not User.objects.filter(username="two@example.org").exists()


def test_a_quota_above_the_domain_maximum_is_refused(example_org):
    example_org.max_quota = 1024**3
    example_org.save()
    with pytest.raises(ValidationError, match="maximum"):
        create_mailbox("big@example.org", PASSWORD, quota=2 * 1024**3)


def test_an_alias_cannot_shadow_a_mailbox(bob):
    with pytest.raises(ValidationError, match="already a mailbox"):
        create_alias("bob@example.org", ["x@remote.test"])


def test_an_alias_needs_valid_destinations(example_org):
    with pytest.raises(ValidationError, match="percent-hack"):
        create_alias("info@example.org", ["a%b@remote.test"])
    assert not Alias.objects.exists()


def test_a_catch_all_is_an_alias_with_an_empty_local_part(bob):
    alias = create_alias("@example.org", ["bob@example.org"])
    assert alias.is_catch_all and alias.address == "@example.org"


def test_an_alias_domain_cannot_also_be_hosted(example_org):
    alias = DomainAlias(name="example.org", target=example_org)
    with pytest.raises(ValidationError, match="already a hosted domain"):
        alias.full_clean()


def test_a_mailbox_may_send_as_itself_and_aliases_that_reach_it(bob):
    create_alias("sales@example.org", ["bob@example.org", "x@remote.test"])
    create_alias("other@example.org", ["x@remote.test"])
    assert bob.can_send_as("BOB@example.org")
    assert bob.can_send_as("sales@example.org")
    assert not bob.can_send_as("other@example.org")
    assert not bob.can_send_as("bob@other.test")
    assert not bob.can_send_as("")


def test_a_relay_credential_secret_is_shown_once_and_stored_hashed(example_org):
    cred, secret = RelayCredential.issue(domain=example_org, label="crm",
                                         allowed_senders=["news@example.org", "@EXAMPLE.org"])
    assert secret not in cred.secret_hash and cred.secret_hash.startswith("{SSHA512}")
    assert cred.check_secret(secret) and not cred.check_secret(secret + "x")
    assert cred.login.startswith("relay-") and cred.login.endswith("@example.org")
    assert cred.can_send_as("anyone@example.org")
    assert not cred.can_send_as("anyone@other.test")
    cred.revoke()
    assert not cred.check_secret(secret)


def test_an_app_password_sends_as_its_mailbox_only(bob):
    cred, secret = RelayCredential.issue(domain=bob.domain, mailbox=bob, label="phone")
    assert cred.login is None
    assert cred.can_send_as("bob@example.org")
    assert not cred.can_send_as("alice@example.org")
