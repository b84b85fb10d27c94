"""Webmail pages over the user's own Maildir: list, read, flags, move, search, compose, isolation."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from mailboxes.models import Mailbox
from webmail.maildir_reader import Maildir

from .conftest import deliver, make_message


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob.user)
    return client


def key_of(path: str) -> str:
    return Path(path).name.split(":")[0]


def test_the_inbox_lists_messages_newest_first_and_shows_unread(bob_client, bob):
    old = deliver(bob, make_message("Older"))
    os.utime(old, (1_700_000_000, 1_700_000_000))
    deliver(bob, make_message("Newer"))
    page = bob_client.get("/webmail/").content.decode()
    assert page.index("Newer") < page.index("Older")
    assert page.count('class="unread"') == 2


def test_the_message_list_is_paged(bob_client, bob):
    for n in range(52):
        deliver(bob, make_message(f"Number {n}"))
    first = bob_client.get("/webmail/").content.decode()
    second = bob_client.get("/webmail/?page=2").content.decode()
    assert first.count("<tr class=") == 50 and second.count("<tr class=") == 2
    assert 'rel="next"' in first


def test_reading_a_message_marks_it_seen_as_dovecot_does(bob_client, bob):
    path = deliver(bob, make_message("Read me"))
    assert "/new/" in path
    response = bob_client.get(f"/webmail/f/INBOX/{key_of(path)}/")
    assert response.status_code == 200
    assert "see you soon." in response.content.decode()
    assert not Path(path).exists()
    assert (bob.maildir / "cur" / f"{key_of(path)}:2,S").exists()
    bob_client.post(f"/webmail/f/INBOX/{key_of(path)}/flag/", {"seen": "0"})
    assert (bob.maildir / "cur" / f"{key_of(path)}:2,").exists()


def test_attachments_download_and_never_render_inline(bob_client, bob):
    path = deliver(bob, make_message("With a file", attachment=("report.pdf", b"%PDF-1.4 fake")))
    page = bob_client.get(f"/webmail/f/INBOX/{key_of(path)}/").content.decode()
    link = re.search(r'href="(/webmail/f/INBOX/[^"]+/part/\d+/)"', page).group(1)
    response = bob_client.get(link)
    assert response.content == b"%PDF-1.4 fake"
    assert response["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert response["Content-Type"] == "application/octet-stream"


def test_move_to_trash_and_junk_then_delete_from_trash(bob_client, bob):
    key = key_of(deliver(bob, make_message("Spam offer")))
    bob_client.post(f"/webmail/f/INBOX/{key}/move/", {"to": "Junk"})
    assert [m.key for m in Maildir(bob.maildir).messages("Junk")] == [key]
    bob_client.post(f"/webmail/f/Junk/{key}/move/", {"to": "Trash"})
    assert [m.key for m in Maildir(bob.maildir).messages("Trash")] == [key]
    assert (bob.maildir / ".Trash" / "maildirfolder").exists()
    bob_client.post(f"/webmail/f/Trash/{key}/move/", {"to": "Trash"})
    assert Maildir(bob.maildir).messages("Trash") == []
    bob.refresh_from_db()
    assert bob.used_bytes == 0


def test_search_matches_sender_and_subject(bob_client, bob):
    deliver(bob, make_message("Quarterly numbers"))
    deliver(bob, make_message("Lunch", sender="Dave <dave@remote.test>"))
    by_subject = bob_client.get("/webmail/?q=quarterly").content.decode()
    assert "Quarterly numbers" in by_subject and "Lunch" not in by_subject
    by_sender = bob_client.get("/webmail/?q=DAVE@").content.decode()
    assert "Lunch" in by_sender and "Quarterly" not in by_sender


def test_a_user_reads_only_their_own_maildir(client, bob, carol):
    key = key_of(deliver(bob, make_message("Bob's secret")))
    client.force_login(carol.user)
    assert client.get(f"/webmail/f/INBOX/{key}/").status_code == 404
    assert client.get(f"/webmail/f/INBOX/{key}/part/0/").status_code == 404
    for bad in ("..", "..%2F..%2Fbob", ".Trash", "INBOX.."):
        assert client.get(f"/webmail/f/{bad}/").status_code == 404
    assert client.get("/webmail/f/INBOX/..%2F..%2Fbob%2Fnew/").status_code == 404
    assert "Bob's secret" not in client.get("/webmail/").content.decode()


def test_webmail_needs_a_login_and_a_mailbox(client, alice):
    assert client.get("/webmail/").status_code == 302
    client.force_login(alice)
    assert client.get("/webmail/").status_code == 404


def test_compose_sends_through_the_acceptance_path_with_attachments(bob_client, bob, carol):
    upload = SimpleUploadedFile("notes.txt", b"attached notes", content_type="text/plain")
    response = bob_client.post("/webmail/compose/", {
        "from_address": "bob@example.org", "to": "Carol <carol@example.org>, someone@remote.test",
        "subject": "Plans", "body": "Here are the plans.", "attachments": [upload],
    })
    assert response.status_code == 302
    from delivery.models import QueuedMessage

    queued = QueuedMessage.objects.get()
    assert queued.source == QueuedMessage.Source.WEBMAIL and queued.auth_user == "bob@example.org"
    assert [r.address for r in queued.recipients.all()] == ["someone@remote.test"]
    [arrived] = Maildir(carol.maildir).messages("INBOX")
    data = arrived.path.read_bytes()
    assert b"Subject: Plans" in data and b"notes.txt" in data and b"Received: from webmail" in data
    assert Maildir(bob.maildir).messages("Sent")[0].seen


def test_compose_refuses_a_sender_the_mailbox_may_not_use_and_unknown_local_users(bob_client, bob):
    response = bob_client.post("/webmail/compose/", {"from_address": "ceo@example.org", "to": "x@remote.test"})
    assert "Select a valid choice" in response.content.decode()
    response = bob_client.post("/webmail/compose/", {"from_address": "bob@example.org",
                                                     "to": "nobody-here@example.org", "subject": "Hi"})
    assert response.status_code == 200 and "does not exist" in response.content.decode()
    assert Maildir(bob.maildir).messages("Sent") == []


def test_forward_carries_the_original_attachments(bob_client, bob, carol):
    key = key_of(deliver(bob, make_message("Report", attachment=("q3.pdf", b"%PDF q3"))))
    form = bob_client.get(f"/webmail/f/INBOX/{key}/forward/").content.decode()
    assert "Fwd: Report" in form
    forward_of = re.search(r'name="forward_of" value="([^"]+)"', form).group(1)
    bob_client.post(f"/webmail/f/INBOX/{key}/forward/", {
        "from_address": "bob@example.org", "to": "carol@example.org", "subject": "Fwd: Report",
        "body": "FYI", "forward_of": forward_of,
    })
    [arrived] = Maildir(carol.maildir).messages("INBOX")
    assert b'filename="q3.pdf"' in arrived.path.read_bytes()


def test_reply_quotes_and_threads(bob_client, bob, carol):
    key = key_of(deliver(bob, make_message("Question")))
    form = bob_client.get(f"/webmail/f/INBOX/{key}/reply/").content.decode()
    assert 'value="carol@example.org"' in form and "Re: Question" in form and "&gt; see you soon." in form
    Mailbox.objects.filter(pk=carol.pk).update(quota=1)
    response = bob_client.post(f"/webmail/f/INBOX/{key}/reply/", {
        "from_address": "bob@example.org", "to": "carol@example.org", "subject": "Re: Question", "body": "Yes",
    })
    assert "mailbox full" in response.content.decode()


def test_a_flag_change_follows_a_message_dovecot_renamed_meanwhile(bob):
    path = Path(deliver(bob, make_message("Renamed under us")))
    maildir = Maildir(bob.maildir)
    [seen_before] = maildir.messages("INBOX")
    os.rename(path, bob.maildir / "cur" / f"{path.name}:2,F")   # what Dovecot does on \\Flagged
    after = maildir.mark_seen(seen_before)
    assert after.path == bob.maildir / "cur" / f"{path.name}:2,FS"
    assert after.path.exists()


def test_reply_all_copies_the_other_recipients_but_not_oneself(bob_client, bob, carol):
    data = make_message("Team lunch", to="Bob <bob@example.org>, dave@remote.test")
    key = key_of(deliver(bob, data.replace(b"Subject:", b"Cc: erin@remote.test, BOB@example.org\r\nSubject:")))
    form = bob_client.get(f"/webmail/f/INBOX/{key}/reply-all/").content.decode()
    assert 'name="to" value="carol@example.org"' in form
    cc = re.search(r'name="cc" value="([^"]*)"', form).group(1)
    assert cc == "dave@remote.test, erin@remote.test"


def test_attachment_names_outside_ascii_survive_the_download(bob_client, bob):
    key = key_of(deliver(bob, make_message("Résumé", attachment=("résumé.pdf", b"%PDF cv"))))
    page = bob_client.get(f"/webmail/f/INBOX/{key}/").content.decode()
    assert "Résumé" in page and "résumé.pdf" in page
    link = re.search(r'href="(/webmail/f/INBOX/[^"]+/part/\d+/)"', page).group(1)
    assert bob_client.get(link)["Content-Disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"


def test_folders_created_over_imap_show_their_real_names(bob_client, bob):
    from delivery.maildir import ensure_maildir

    ensure_maildir(bob.maildir / ".Caf&AOk-.Re&AOc-us")   # what Dovecot writes for "Café/Reçus"
    page = bob_client.get("/webmail/").content.decode()
    assert "Café/Reçus" in page
    assert bob_client.get("/webmail/f/Caf&AOk-.Re&AOc-us/").status_code == 200


def test_the_list_survives_messages_dovecot_renamed_or_expunged_meanwhile(bob):
    renamed = Path(deliver(bob, make_message("Renamed")))
    expunged = Path(deliver(bob, make_message("Expunged")))
    maildir = Maildir(bob.maildir)
    listed = maildir.messages("INBOX")
    os.rename(renamed, bob.maildir / "cur" / f"{renamed.name}:2,S")
    expunged.unlink()
    assert [s.subject for s in maildir.summaries(listed)] == ["Renamed"]
