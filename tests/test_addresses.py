"""The address and domain rules every entry point shares (mailhost/addresses.py)."""

import pytest

from mailhost.addresses import AddressError, normalize_domain, parse_address

GOOD_DOMAINS = [
    ("example.org", "example.org"),
    ("EXAMPLE.Org", "example.org"),
    ("exämple.test", "xn--exmple-cua.test"),
    ("xn--exmple-cua.test", "xn--exmple-cua.test"),
    ("XN--EXMPLE-CUA.TEST", "xn--exmple-cua.test"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("müller.de", "xn--mller-kva.de"),
    ("日本.jp", "xn--wgv71a.jp"),
    ("a-b.c-d.test", "a-b.c-d.test"),
    ("sub.domain.example.co.uk", "sub.domain.example.co.uk"),
]

BAD_DOMAINS = [
    ("", "empty"),
    ("localhost", "two labels"),
    ("example.org.", "trailing dot"),
    ("exa mple.org", "space"),
    ("exa/mple.org", "'/'"),
    ("..example.org", "'..'"),
    ("example..org", "'..'"),
    ("-example.org", "label"),
    ("example-.org", "label"),
    ("exa_mple.org", "label"),
    ("[127.0.0.1]", "IP address"),
    ("127.0.0.1", "IP address"),
    ("example.123", "digits"),
    ("a" * 64 + ".org", "63"),
    ("example.org\x00", "NUL"),
    ("example.org\r\n", "line break"),
    ("exa%mple.org", "'%'"),
    ("exa@mple.org", "'@'"),
    ("xn--zz.test", "internationalised"),
]


@pytest.mark.parametrize(("given", "stored"), GOOD_DOMAINS)
def test_it_stores_domains_as_lower_case_a_labels(given, stored):
    assert normalize_domain(given) == stored


@pytest.mark.parametrize(("given", "problem"), BAD_DOMAINS)
def test_it_refuses_bad_domains_naming_the_problem(given, problem):
    with pytest.raises(AddressError) as err:
        normalize_domain(given)
    assert problem.lower() in str(err.value).lower()


GOOD_ADDRESSES = [
    ("bob@example.org", "bob@example.org"),
    ("Bob@Example.ORG", "bob@example.org"),
    ("first.last@example.org", "first.last@example.org"),
    ("bob+tag@example.org", "bob+tag@example.org"),
    ("o'brien@example.org", "o'brien@example.org"),
    ("user@exämple.test", "user@xn--exmple-cua.test"),
    ("<bob@example.org>", "bob@example.org"),
    ("jörg@example.org", "jörg@example.org"),
]

BAD_ADDRESSES = [
    ("", "empty"),
    ("bob", "exactly one '@'"),
    ("a/../b@example.org", "local part contains"),
    ("../etc@example.org", "local part"),
    ("a/b@example.org", "'/'"),
    ("a\\b@example.org", "'\\'"),
    ("bob%other.test@example.org", "percent-hack"),
    ("other.test!bob@example.org", "bang-path"),
    ("@relay.test:bob@other.test", "source route"),
    ('"bob@other.test"@example.org', "exactly one '@'"),
    ('"bob"@example.org', "quote"),
    ("bob@other.test@example.org", "exactly one '@'"),
    ("bob@example.org.", "trailing dot"),
    ("bob@[127.0.0.1]", "IP address"),
    (".bob@example.org", "dot"),
    ("bob.@example.org", "dot"),
    ("bo..b@example.org", "'..'"),
    ("bob\r\nRCPT TO:<x@y.test>@example.org", "line break"),
    ("bob\x00@example.org", "NUL"),
    ("bob\x1b@example.org", "control character"),
    ("bo b@example.org", "space"),
    ("x" * 65 + "@example.org", "longer than 64"),
]


@pytest.mark.parametrize(("given", "normal"), GOOD_ADDRESSES)
def test_it_accepts_and_case_folds_good_addresses(given, normal):
    assert str(parse_address(given)) == normal


@pytest.mark.parametrize(("given", "problem"), BAD_ADDRESSES)
def test_it_refuses_bad_addresses_naming_the_problem(given, problem):
    with pytest.raises(AddressError) as err:
        parse_address(given)
    assert problem.lower() in str(err.value).lower()


def test_a_mailbox_name_may_not_carry_the_subaddress_separator():
    with pytest.raises(AddressError, match="subaddressing"):
        parse_address("bob+x@example.org", allow_subaddress=False)


def test_subaddress_tag_is_dropped_for_delivery():
    assert parse_address("Bob+Lists@example.org").base_local == "bob"
