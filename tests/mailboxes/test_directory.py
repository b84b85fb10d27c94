"""What an address reaches (mailboxes/directory.py): the answer RCPT TO relies on."""

from domains.models import DomainAlias
from mailboxes.directory import Verdict, resolve
from mailboxes.provisioning import create_alias, create_mailbox
from tests.support import PASSWORD


def test_it_delivers_to_a_mailbox_in_any_case_and_with_a_tag(bob):
    for address in ("bob@example.org", "BOB@EXAMPLE.ORG", "bob+news@example.org"):
        result = resolve(address)
        assert result.ok and result.mailboxes == [bob]


def test_an_unknown_user_of_a_hosted_domain_is_unknown(bob):
    assert resolve("nobody@example.org").verdict is Verdict.UNKNOWN_USER


def test_an_unhosted_domain_is_not_hosted(bob):
    assert resolve("bob@elsewhere.test").verdict is Verdict.NOT_HOSTED


def test_routing_tricks_are_bad_addresses(bob):
    for trick in ("bob%elsewhere.test@example.org", "elsewhere.test!bob@example.org",
                  "@example.org:bob@elsewhere.test", '"bob@elsewhere.test"@example.org'):
        assert resolve(trick).verdict is Verdict.BAD_ADDRESS, trick


def test_an_alias_expands_to_local_and_remote_destinations(bob):
    create_alias("team@example.org", ["bob@example.org", "ext@remote.test"])
    result = resolve("team@example.org")
    assert result.mailboxes == [bob] and result.remote == ["ext@remote.test"]


def test_alias_loops_end(bob):
    create_alias("a@example.org", ["b@example.org"])
    create_alias("b@example.org", ["a@example.org", "bob@example.org"])
    assert resolve("a@example.org").mailboxes == [bob]


def test_the_catch_all_takes_unknown_users(bob):
    create_alias("@example.org", ["bob@example.org"])
    assert resolve("whoever@example.org").mailboxes == [bob]


def test_a_domain_alias_reaches_the_target_domain(bob):
    DomainAlias.objects.create(name="example.net", target=bob.domain)
    assert resolve("bob@example.net").mailboxes == [bob]


def test_a_suspended_mailbox_does_not_receive(bob):
    bob.active = False
    bob.save()
    assert resolve("bob@example.org").verdict is Verdict.DISABLED


def test_forwarding_without_a_copy_sends_only_to_the_target(example_org):
    carol = create_mailbox("carol@example.org", PASSWORD)
    carol.forward_to, carol.forward_keep_copy = ["carol@remote.test"], False
    carol.save()
    result = resolve("carol@example.org")
    assert result.mailboxes == [] and result.remote == ["carol@remote.test"]


def test_a_bounce_to_our_srs_address_goes_back_to_the_original_sender(bob):
    from delivery import srs

    for n in range(100):  # many hashes: none may carry a character refused in local parts
        address = srs.forward(f"carol{n}@elsewhere.test")
        result = resolve(address)
        assert result.ok and result.remote == [f"carol{n}@elsewhere.test"], address


def test_a_forged_srs_address_is_not_a_relay(bob, settings):
    from delivery import srs

    forged = srs.forward("carol@elsewhere.test").replace("carol", "mallory")
    assert resolve(forged).verdict is Verdict.NOT_HOSTED


def test_an_srs_address_for_a_hosted_sender_resolves_to_its_mailbox(bob):
    from delivery import srs

    assert resolve(srs.forward("bob@example.org")).mailboxes == [bob]


def test_without_the_database_only_a_domain_known_not_to_be_hosted_is_answered(bob, settings,
                                                                                django_assert_num_queries):
    from delivery import srs

    settings.SMTP_DIRECTORY_CACHE = 60
    with django_assert_num_queries(0):
        assert resolve("carol@elsewhere.test", without_database=True) is None    # not asked yet
        assert resolve("bob%x@example.org", without_database=True).verdict is Verdict.BAD_ADDRESS
    assert resolve("carol@elsewhere.test").verdict is Verdict.NOT_HOSTED
    assert resolve("bob@example.org").ok
    bounce = srs.forward("carol@elsewhere.test")
    with django_assert_num_queries(0):
        assert resolve("dave@elsewhere.test", without_database=True).verdict is Verdict.NOT_HOSTED
        assert resolve("bob@example.org", without_database=True) is None          # hosted: ask
        assert resolve(bounce, without_database=True) is None                     # our SRS: ask


def test_a_domain_added_is_no_longer_answered_as_not_hosted_from_memory(bob, settings):
    from domains.models import Domain

    settings.SMTP_DIRECTORY_CACHE = 60
    assert resolve("carol@elsewhere.test").verdict is Verdict.NOT_HOSTED
    Domain.objects.create(name="elsewhere.test")
    assert resolve("carol@elsewhere.test", without_database=True) is None


def test_one_look_at_the_hosted_names_answers_every_other_domain_as_not_hosted(bob, settings,
                                                                               django_assert_num_queries):
    """A submission service's recipients spread over many remote domains: after one query for
    the hosted names, none of them costs a query (or a trip off the event loop) until the
    memory lapses, while hosted domains and alias domains are still looked up."""
    from domains.models import Domain, DomainAlias

    settings.SMTP_DIRECTORY_CACHE = 60
    DomainAlias.objects.create(name="example.net", target=Domain.objects.get(name="example.org"))
    assert resolve("carol@first-remote.test").verdict is Verdict.NOT_HOSTED
    with django_assert_num_queries(0):
        for n in range(20):
            assert resolve(f"someone@remote-{n}.test", without_database=True).verdict is Verdict.NOT_HOSTED
            assert resolve(f"someone@remote-{n}.test").verdict is Verdict.NOT_HOSTED
        assert resolve("bob@example.net", without_database=True) is None      # an alias domain: ask
    assert resolve("bob@example.net").mailboxes == [bob]


def test_a_domain_added_is_seen_although_the_hosted_names_were_remembered(bob, settings):
    from domains.models import Domain

    settings.SMTP_DIRECTORY_CACHE = 60
    assert resolve("carol@later.test").verdict is Verdict.NOT_HOSTED
    Domain.objects.create(name="later.test")
    assert resolve("carol@later.test", without_database=True) is None
    assert resolve("carol@later.test").verdict is Verdict.UNKNOWN_USER


def test_with_too_many_hosted_names_to_hold_each_name_is_looked_up(bob, settings, monkeypatch):
    from mailboxes import directory

    settings.SMTP_DIRECTORY_CACHE = 60
    monkeypatch.setattr(directory, "HOSTED_NAMES_HELD", 0)
    assert resolve("carol@first-remote.test").verdict is Verdict.NOT_HOSTED
    assert resolve("carol@second-remote.test", without_database=True) is None
    assert resolve("bob@example.org").ok
