"""The SMTP service reads the common shapes of MAIL/RCPT paths and From: headers without the
email package's parser, the signer canonicalizes ordinary bodies and headers without dkimpy's
regular expressions, and queue rows become column values without Django's field layers. Those
shortcuts must give exactly the slow path's answer, or defer to it."""

import datetime as dt
import zoneinfo

import dkim
import pytest
from aiosmtpd.smtp import SMTP
from django.db import connection
from dkim import canonicalization
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery import db_writes, signing, smtp_policy, smtp_transaction
from delivery.models import MessageLog, QueuedMessage, QueuedRecipient
from delivery.smtp_server import MailSMTP
from domains.dkim import generate_keypair
from domains.models import DkimKey, Domain


class _Bare:
    local_part_limit = 0


def fast_getaddr(arg):
    return MailSMTP._getaddr(_Bare(), arg)


def parser_getaddr(arg):
    return SMTP._getaddr(_Bare(), arg)


PATHS = [
    "<user@example.com>", "<user@example.com> SIZE=4096 BODY=8BITMIME", "<a.b+tag=x@sub.example.org>",
    "<user@example.com>\tSIZE=1", "<user@example.com>   ", "<user@example.com> (comment) SIZE=1",
    "<user@example.com.>", "<user..dots@example.com>", "<.lead@example.com>", "<\"quoted local\"@example.com>",
    "<@relay.example:user@example.com>", "<user%other@example.com>", "<user@[127.0.0.1]>", "<>",
    "user@example.com", " <user@example.com>", "<user@example.com", "<bang!path@example.com>",
    "<user@-example.com>", "<user@exa_mple.com>", "<üser@example.com>", "<user@example.com>x",
]


@pytest.mark.parametrize("arg", PATHS)
def test_a_mail_or_rcpt_path_parses_as_aiosmtpd_parses_it(arg):
    assert fast_getaddr(arg) == parser_getaddr(arg)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab.@<>_+=- \t()\"!%:[]1", max_size=30))
def test_any_path_text_parses_as_aiosmtpd_parses_it(arg):
    try:
        expected = parser_getaddr(arg)
    except Exception as error:     # the parser's own crashes: the shortcut must defer to it
        with pytest.raises(type(error)):
            fast_getaddr(arg)
        return
    assert fast_getaddr(arg) == expected


def test_a_local_part_over_the_limit_is_refused_on_the_shortcut_too():
    class Limited:
        local_part_limit = 3

    assert MailSMTP._getaddr(Limited(), "<abcd@example.com>") == (None, None)
    assert MailSMTP._getaddr(Limited(), "<abc@example.com>") == ("abc@example.com", "")


HEADERS = [
    b"From: Load <load@sender.test>\r\nTo: <x@y.test>\r\nSubject: hi\r\n\r\nbody",
    b"From: load@sender.test\r\n\r\n",
    b"from:   <load@sender.test>  \r\nsubject: x\r\n\r\n",
    b"Subject: folded\r\n continues\r\nFrom: John Q Public <jqp@example.com>\r\n\r\n",
    b"From: One <a@example.com>\r\nFrom: Two <b@example.com>\r\n\r\n",
    b"From: a@example.com, b@example.com\r\n\r\n",
    b"From: \"Quoted, Name\" <a@example.com>\r\n\r\n",
    b"From: \"real@bank.example\" <evil@attacker.example>\r\n\r\n",
    b"From: Name <a@example.com>\r\n\tfolded <b@example.com>\r\n\r\n",
    b"From: Name <a@example.com>\r\nSender: s@example.com\r\n\r\n",
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n\r\n",
    b"From: J\xc3\xbcrgen <j@example.com>\r\n\r\n",
    b"From: <a@example.com>\nTo: x\n\n",
    b"From: <a@example.com>\r\nBad header line\r\n\r\n",
    b"From : <a@example.com>\r\n\r\n",
    b"From <a@example.com> Mon Jan 1\r\nFrom: <b@example.com>\r\n\r\n",
    b" folded first\r\nFrom: <a@example.com>\r\n\r\n",
    b"To: x@y.test\r\n\r\n",
    b"From: <a@example.com>",
    b"From: Name (comment) <a@example.com>\r\n\r\n",
    b"From: Name <a@example.com> (comment)\r\n\r\n",
    b"From: Group: a@example.com;\r\n\r\n",
    b"From: <a@example.com>\r\r\n\r\n",
]


@pytest.mark.parametrize("data", HEADERS)
def test_the_from_header_reads_as_the_email_package_reads_it(data):
    block = smtp_policy.header_block(data)
    assert smtp_policy.header_sender_addresses(data) == smtp_policy._parsed_sender_addresses(block)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([
    b"From: ", b"from:", b"Sender: ", b"To: ", b"Subject: x", b"Name ", b"<", b">", b"a", b"@", b"b.c",
    b".", b" ", b"\t", b",", b"\"", b"(", b")", b"\r\n", b"\n", b"\r", b":", b";", b"'", b"_", b"\xc3\xbc",
]), max_size=24))
def test_any_header_text_reads_as_the_email_package_reads_it(parts):
    data = b"".join(parts) + b"\r\n\r\nbody"
    block = smtp_policy.header_block(data)
    assert smtp_policy.header_sender_addresses(data) == smtp_policy._parsed_sender_addresses(block)


BODY_PIECES = [b"a", b"word", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b".", b"\r\n\r\n"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(BODY_PIECES), max_size=40))
def test_the_dkim_body_canonicalization_is_dkimpys_for_any_body(pieces):
    body = b"".join(pieces)
    relaxed = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert signing.relaxed_body(body) == relaxed.canonicalize_body(body)


@pytest.mark.parametrize("body", [b"", b"\r\n", b"text\r\n", b"text\r\n\r\n\r\n", b"two  spaces\r\n",
                                  b"trailing \r\n", b"tab\there\r\n", b"no line end", b"end space "])
def test_the_dkim_body_canonicalization_handles_the_edges_as_dkimpy_does(body):
    relaxed = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert signing.relaxed_body(body) == relaxed.canonicalize_body(body)


HEADER_VALUE_PIECES = [b"a", b"word", b" ", b"  ", b"\t", b"\r\n", b"\r\n ", b"\r\n\t", b"\r", b"\n", b"\x0b",
                       b"\xc3\xbc"]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([b"Subject", b"FROM", b"To ", b"x-Tag\t"]),
       st.lists(st.sampled_from(HEADER_VALUE_PIECES), max_size=20))
def test_the_dkim_header_canonicalization_is_dkimpys_for_any_header(name, pieces):
    headers = [(name, b"".join(pieces)), (b"Date", b" Tue, 24 Nov 2026 17:00:00 +0000\r\n")]
    relaxed = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert signing.relaxed_headers(headers) == relaxed.canonicalize_headers(headers)


_SIGNER_KEY = None


def _signer_key():
    """An RSA key of a domain that is never saved: the signer reads only these fields."""
    global _SIGNER_KEY
    if _SIGNER_KEY is None:
        private, public = generate_keypair(DkimKey.Algorithm.RSA2048)
        _SIGNER_KEY = DkimKey(domain=Domain(name="example.org"), selector="prop", private_key=private,
                              public_key=public, algorithm=DkimKey.Algorithm.RSA2048)
    return _SIGNER_KEY


def test_ordinary_parsed_headers_skip_dkimpys_regular_expressions(monkeypatch):
    """Every parsed value ends with its line's CRLF; that alone must not send it the slow way.
    Only the folded DKIM-Signature header itself (and folded or oddly spaced ones) goes there."""
    slow: list[bytes] = []
    original = canonicalization.Relaxed.canonicalize_headers

    def recorded(headers):
        slow.extend(name for name, _ in headers)
        return original(headers)

    monkeypatch.setattr(canonicalization.Relaxed, "canonicalize_headers", staticmethod(recorded))
    data = (b"Received: from a ([127.0.0.1])\r\n\tby b; id c\r\nFrom: Bob <bob@example.org>\r\n"
            b"To: carol@remote.test\r\nSubject: plain\r\nCc: dan@remote.test,\r\n eve@remote.test\r\n"
            b"MIME-Version: 1.0\r\n\r\nbody\r\n")
    signing.signature_header(data, _signer_key())
    assert slow == [b"Cc", b"DKIM-Signature"]


HEADER_LINES = [b"To: carol@remote.test", b"Cc: dan@remote.test,\r\n\teve@remote.test", b"Subject: a  b",
                b"Subject:\tfolded\r\n more", b"Received: from a ([127.0.0.1])\r\n\tby b; id c",
                b"X-Unsigned:  odd \t spacing", b"List-Id: <list.example.org>", b"Reply-To: r@example.org",
                b"MIME-Version: 1.0", b"Date: Tue, 24 Nov 2026 17:00:00 +0000"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(HEADER_LINES), max_size=8), st.integers(min_value=0, max_value=8))
def test_a_signature_over_any_mix_of_signed_and_unsigned_headers_verifies(lines, at):
    key = _signer_key()
    lines = list(lines)
    lines.insert(min(at, len(lines)), b"From: Bob <bob@example.org>")
    data = b"\r\n".join(lines) + b"\r\n\r\nbody  text\r\n"
    signed = signing.signature_header(data, key) + data
    txt = f"v=DKIM1; k=rsa; p={key.public_key}".encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: txt)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\r\n", b"\r", b"\n", b"\r\r\n", b"\n\r"]), max_size=30))
def test_line_endings_are_normalised_to_crlf_as_the_regular_expression_does(pieces):
    data = b"".join(pieces)
    expected = signing._BARE_NEWLINE.sub(b"\r\n", data)
    expected = expected if expected.endswith(b"\r\n") else expected + b"\r\n"
    assert signing.normalize_crlf(data) == expected


TEXT = st.one_of(st.none(), st.text(max_size=5), st.integers(-3, 3))
WHEN = st.one_of(st.none(), st.datetimes(timezones=st.just(dt.UTC)),
                 st.datetimes(timezones=st.just(zoneinfo.ZoneInfo("Europe/Berlin"))))


def django_row(obj):
    fields, _ = db_writes._insert_sql(type(obj), connection.vendor)
    return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


def comparable(row):
    """Values with their exact types; adapters that wrap bytes (psycopg's Binary) unwrapped."""
    return [(type(v), bytes(getattr(v, "obj", v)) if isinstance(getattr(v, "obj", v), (bytes, memoryview))
             else v) for v in row]


def same_values(obj):
    return [comparable(r) for r in db_writes.row_values([obj])] == [comparable(django_row(obj))]


@settings(max_examples=300, deadline=None)
@given(address=TEXT, attempts=st.one_of(st.none(), st.integers(0, 9), st.just("7")),
       next_at=WHEN, lease_until=WHEN, warned=st.one_of(st.booleans(), st.just(0)))
def test_queue_row_values_are_what_django_would_write(address, attempts, next_at, lease_until, warned):
    row = QueuedRecipient(message_id=5, address=address, domain="d.example", attempts=attempts,
                          next_attempt_at=next_at, lease_until=lease_until, delay_warned=warned)
    assert same_values(row)


@settings(max_examples=200, deadline=None)
@given(sender=TEXT, size=st.one_of(st.integers(0, 10**6), st.none()), created=WHEN,
       data=st.one_of(st.binary(max_size=20), st.just(memoryview(b"view"))),
       ip=st.sampled_from([None, "", "127.0.0.1", "::1"]))
def test_message_and_log_row_values_are_what_django_would_write(sender, size, created, data, ip):
    message = QueuedMessage(sender=sender, data=data, size=size, created_at=created)
    log = MessageLog(direction="outbound", result="delivered", client_ip=ip,
                     mail_from=sender, size=size, created_at=created)
    for obj in (message, log):
        assert same_values(obj)


def test_a_naive_datetime_takes_djangos_path_with_its_warning():
    row = QueuedRecipient(message_id=1, address="a@b.example", domain="b.example",
                          next_attempt_at=dt.datetime(2026, 1, 1, 12, 0))
    with pytest.warns(RuntimeWarning, match="naive datetime") as warned:
        values = db_writes.row_values([row])
    assert len(warned) == 1
    assert comparable(values[0]) == comparable(django_row(row))


@settings(max_examples=200, deadline=None)
@given(sender=TEXT, size=st.integers(0, 10**6), created=WHEN, domain=st.one_of(st.none(), st.integers(1, 9)))
def test_log_rows_from_plain_values_are_what_django_would_write(sender, size, created, domain):
    given_values = {"domain_id": domain, "direction": "outbound", "result": "delivered", "mail_from": sender,
                    "recipients": sender, "size": size, "tls": "TLSv1.3", "reply": "250 ok"}
    if created is not None:
        given_values["created_at"] = created
    [row] = db_writes.new_row_values(MessageLog, [given_values])
    expected = MessageLog(**given_values)
    if created is None:     # both take the field's default, timezone.now(), at their own instant
        row[column(MessageLog, "created_at")] = None
        expected.created_at = None
    assert comparable(row) == comparable(django_row(expected))


def test_queue_recipient_rows_from_plain_values_take_the_models_defaults():
    given_values = {"message_id": 5, "address": "a@b.example", "domain": "b.example", "original_address": ""}
    [row] = db_writes.new_row_values(QueuedRecipient, [given_values])
    expected = django_row(QueuedRecipient(**given_values))
    when = column(QueuedRecipient, "next_attempt_at")    # timezone.now(), each at its own instant
    assert row[when] is not None
    row[when] = expected[when] = None
    assert comparable(row) == comparable(expected)
    assert row[column(QueuedRecipient, "state")] == "queued"


def column(model, name):
    return db_writes.column_index(model, name)


def test_log_rows_from_plain_values_refuse_a_column_the_model_does_not_have():
    with pytest.raises(TypeError, match="no column domain"):
        db_writes.new_row_values(MessageLog, [{"domain": None, "direction": "outbound"}])


@pytest.mark.django_db
def test_statements_on_the_plain_cursor_behave_as_through_djangos(bob):
    """The shortcut past Django's cursor keeps its placeholders, its %% and its errors."""
    from django.db import IntegrityError

    assert not connection.queries_logged and not connection.execute_wrappers, "the shortcut is what runs"
    cursor = db_writes._statement("SELECT '100%%', %s, %s", ["a", 2])
    assert tuple(cursor.fetchone()) == ("100%", "a", 2)
    cursor.close()
    table = connection.ops.quote_name(MessageLog._meta.db_table)
    assert db_writes.execute(f"UPDATE {table} SET size = size + %s WHERE id = %s", [1, -1]) == 0
    with pytest.raises(IntegrityError):
        db_writes.execute(f"INSERT INTO {table} (id, created_at, direction, result, queue_id, helo, tls, auth_user,"
                          " mail_from, recipients, subject, size, reply) VALUES (%s, %s, 'x', 'y', '', '', '', '',"
                          " '', '', '', 0, %s)", [1, None, ""])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([
    b"From: a@b.c", b"Subject: x", b"To:y", b" folded", b"\tfolded", b"From x", b"a", b" ", b":",
    b"\r\n", b"\r\n\r\n", b"body", b".",
]), max_size=30))
def test_the_signer_splits_headers_from_the_body_as_dkimpy_does(pieces):
    data = signing.normalize_crlf(b"".join(pieces))
    try:
        expected = dkim.rfc822_parse(data)
    except Exception as exc:  # noqa: BLE001 - whatever dkimpy refuses, the signer refuses alike
        with pytest.raises(type(exc)):
            signing.parse(data)
        return
    assert signing.parse(data) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "Z", "@", ".", "é", "\U0001f600", "\udc80", "\udcc3", "\udcff"])))
def test_bytes_that_are_not_utf8_are_told_apart_from_text_that_is(text):
    """aiosmtpd decodes SMTPUTF8 arguments with surrogateescape: undecodable bytes arrive as
    lone surrogates, and the ASCII shortcut must not let them through."""
    try:
        text.encode("utf-8")
        valid = True
    except UnicodeEncodeError:
        valid = False
    assert smtp_policy.is_valid_utf8(text) == valid


@pytest.mark.parametrize(("text", "shown"), [
    ("client.example", "client.example"), ("evil\r\nBcc: x", "evil??Bcc: x"), ("nul\x00", "nul?"),
    ("del\x7f", "del?"), ("tab\there", "tab?here"), ("", ""), ("ünïcode", "ünïcode"),
])
def test_the_received_header_shows_printable_text_as_it_is_and_replaces_the_rest(text, shown):
    assert smtp_transaction._printable(text) == shown
