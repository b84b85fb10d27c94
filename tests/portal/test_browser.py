"""The portal in a real Chromium: the superadmin adds a domain and a mailbox, the mailbox user
changes their password. Screenshots go to var/screenshots/ (the path is printed)."""

from __future__ import annotations

import re

import pytest

from tests.support import PASSWORD, ROOT, need_program

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "var" / "screenshots"


@pytest.fixture
def page(monkeypatch):
    chromium = need_program("chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls made by the test
    # itself between steps are ordinary synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from django.db import connections
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SCREENSHOTS}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()
        # ORM calls made while Playwright's loop runs get their own connection (Django keys
        # connections by context); left open it would block dropping the PostgreSQL test database.
        connections.close_all()


def _login(page, base, username, password):
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_superadmin_adds_a_domain_and_a_mailbox_whose_user_changes_the_password(page, live_server, superadmin):
    from domains.models import Domain
    from mailboxes.models import Mailbox

    base = live_server.url
    _login(page, base, "root", PASSWORD)
    page.wait_for_url(f"{base}/")
    page.click("text=Add a domain")
    page.fill("input[name=name]", "shop.test")
    page.click("button:has-text('Add domain')")
    page.wait_for_url(re.compile(r"/domains/\d+/$"))
    records = page.inner_text("#records")
    assert "10 mail.mailhost.test" in records
    assert "v=spf1 mx ip4:127.0.0.1 -all" in records
    assert f"{Domain.objects.get().active_dkim_key().selector}._domainkey.shop.test" in records
    page.screenshot(path=SCREENSHOTS / "1-domain-records.png", full_page=True)

    page.click(".tabs >> text=Mailboxes")
    page.click("text=New mailbox")
    page.fill("input[name=local_part]", "anna")
    page.fill("input[name=display_name]", "Anna")
    page.fill("input[name=password1]", "first password")
    page.fill("input[name=password2]", "first password")
    page.click("button:has-text('Create mailbox')")
    assert "anna@shop.test is ready." in page.inner_text(".messages")
    assert "anna@shop.test" in page.inner_text("table")
    page.screenshot(path=SCREENSHOTS / "2-mailbox-created.png", full_page=True)
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login/$"))

    _login(page, base, "Anna@Shop.test", "first password")
    page.wait_for_url(re.compile(r"/me/$"))
    assert "anna@shop.test" in page.inner_text("h1")
    page.click(".tabs >> text=Password")
    page.fill("input[name=old_password]", "first password")
    page.fill("input[name=new_password1]", "second password")
    page.fill("input[name=new_password2]", "second password")
    page.click("button:has-text('Change password')")
    assert "Your password is changed" in page.inner_text(".messages")
    page.screenshot(path=SCREENSHOTS / "3-password-changed.png", full_page=True)
    assert Mailbox.objects.get(local_part="anna").user.check_password("second password")

    page.click("text=Log out")
    _login(page, base, "anna@shop.test", "first password")
    assert "Wrong mail address" in page.inner_text("form")
    _login(page, base, "anna@shop.test", "second password")
    page.wait_for_url(re.compile(r"/me/$"))


def test_a_csv_import_shows_progress_and_the_errors_of_each_row(page, live_server, alice, tmp_path):
    from mailboxes.models import Mailbox

    rows = ["address,password,quota,display_name"] + [f"user{i:03d},long password {i},,User {i}" for i in range(120)]
    rows[31] = "broken@other.test,long password,,Broken"
    rows[77] = "short,pw,,Short"
    csv_file = tmp_path / "mailboxes.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    base = live_server.url
    _login(page, base, "alice", PASSWORD)
    page.wait_for_url(f"{base}/")
    domain_pk = alice.administered_domains.get().pk
    page.goto(f"{base}/domains/{domain_pk}/import/")
    page.select_option("select[name=kind]", "mailboxes")
    page.set_input_files("input[type=file]", str(csv_file))
    page.click("button:has-text('Import')")
    page.wait_for_selector("#import-results table")
    assert "2 errors" in page.inner_text("#import-count")
    assert page.get_attribute("progress", "value") == page.get_attribute("progress", "max")
    results = page.inner_text("#import-results")
    assert "Result: 120 rows" in results
    assert "other.test is not example.org" in results and "at least 8 characters" in results
    page.screenshot(path=SCREENSHOTS / "4-csv-import.png", full_page=True)
    assert Mailbox.objects.filter(domain_id=domain_pk).count() == 118


def test_a_domain_admin_lifts_a_suppression_from_the_suppressions_tab(page, live_server, alice, example_org):
    import datetime as dt

    from django.utils import timezone

    from delivery.models import Suppression

    Suppression.objects.create(domain=example_org, address="gone@remote.test", reason="550 5.1.1 No such user here",
                               expires_at=timezone.now() + dt.timedelta(days=30))
    base = live_server.url
    _login(page, base, "alice", PASSWORD)
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/domains/{example_org.pk}/")
    page.click("a:has-text('Suppressions')")
    assert "gone@remote.test" in page.inner_text("table")
    page.click("button:has-text('Remove')")
    page.wait_for_selector("text=gone@remote.test is no longer suppressed")
    assert "No suppressed recipients" in page.inner_text("table")
    page.screenshot(path=SCREENSHOTS / "5-suppressions.png", full_page=True)
    assert not Suppression.objects.filter(domain=example_org).exists()


def test_a_domain_admin_adds_a_webhook_and_removes_it_in_the_browser(page, live_server, alice, example_org):
    from delivery.models import Webhook

    base = live_server.url
    _login(page, base, "alice", PASSWORD)
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/domains/{example_org.pk}/")
    page.click("a:has-text('Webhooks')")
    page.fill("input[name=url]", "http://hooks.example.net/mail")
    page.click("button:has-text('Add webhook')")
    page.wait_for_selector("text=Use an https:// URL")
    page.fill("input[name=url]", "https://hooks.example.net/mail")
    page.check("input[name=events][value=expired]")
    page.click("button:has-text('Add webhook')")
    page.wait_for_selector("text=Events now go to https://hooks.example.net/mail")
    webhook = Webhook.objects.get(domain=example_org)
    assert sorted(webhook.events) == ["bounced", "delivered", "expired"]
    assert webhook.secret in page.inner_text("table")
    page.screenshot(path=SCREENSHOTS / "6-webhooks.png", full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Remove')")
    page.wait_for_selector("text=gets no more events")
    assert "No webhooks yet" in page.inner_text("table")
    assert not Webhook.objects.exists()
