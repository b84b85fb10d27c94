"""Unread state is shared: Dovecot and webmail read and write the same Maildir file names."""

from __future__ import annotations

import pytest

from tests.support import PASSWORD

from .conftest import deliver
from .test_dovecot import message

pytestmark = pytest.mark.slow


def imap_flags(client, subject: str) -> bytes:
    client.noop()
    _, found = client.search(None, f'SUBJECT "{subject}"')
    _, data = client.fetch(found[0], "(FLAGS)")
    return data[0]


def row_class(client, subject: str) -> str:
    page = client.get("/webmail/").content.decode()
    row = next(line for line in page.split("<tr ")[1:] if subject in line)
    return row.split('"')[1]


def test_seen_set_over_imap_shows_as_read_in_webmail(dovecot, bob, client):
    deliver(bob, message("Seen by IMAP"))
    client.force_login(bob.user)
    assert row_class(client, "Seen by IMAP") == "unread"
    imap = dovecot.imap("bob@example.org", PASSWORD)
    imap.select("INBOX")
    imap.store(b"1", "+FLAGS", "\\Seen")
    assert row_class(client, "Seen by IMAP") == "read"
    imap.store(b"1", "-FLAGS", "\\Seen")
    assert row_class(client, "Seen by IMAP") == "unread"
    imap.logout()


def test_reading_in_webmail_shows_as_seen_over_imap_and_back(dovecot, bob, client):
    path = deliver(bob, message("Read in webmail"))
    imap = dovecot.imap("bob@example.org", PASSWORD)
    imap.select("INBOX")
    assert b"\\Seen" not in imap_flags(imap, "Read in webmail")
    client.force_login(bob.user)
    key = path.rsplit("/", 1)[1]
    assert client.get(f"/webmail/f/INBOX/{key}/").status_code == 200
    assert b"\\Seen" in imap_flags(imap, "Read in webmail")
    client.post(f"/webmail/f/INBOX/{key}/flag/", {"seen": "0"})
    assert b"\\Seen" not in imap_flags(imap, "Read in webmail")
    imap.logout()
