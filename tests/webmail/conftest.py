from __future__ import annotations

import pytest

from mailboxes.provisioning import create_mailbox
from tests.support import PASSWORD


@pytest.fixture
def carol(example_org):
    return create_mailbox("carol@example.org", PASSWORD, display_name="Carol")


def make_message(subject: str, *, sender: str = "Carol <carol@example.org>", to: str = "bob@example.org",
                 body: str = "Hello Bob,\nsee you soon.\n", html: str | None = None,
                 attachment: tuple[str, bytes] | None = None) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import make_msgid

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg["Date"] = "Sun, 22 Nov 2026 20:00:00 +0000"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    return msg.as_bytes(policy=SMTP)


def deliver(mailbox, data: bytes) -> str:
    from delivery.models import QueuedMessage
    from delivery.storage import store_message

    return store_message("carol@example.org", [mailbox], [], data,
                         source=QueuedMessage.Source.INBOUND).local_paths[mailbox.address]


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def browser(monkeypatch):
    """Real Chromium through Playwright's sync API (its event loop makes Django's ORM guard fire
    in the test thread, which is not an async context in fact)."""
    from tests.support import need_program

    chromium = need_program("chromium")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def logged_in_page(browser, live_server):
    """A page whose session belongs to the given user (the portal's login page is not needed)."""
    from django.test import Client

    contexts = []

    def open_page(user):
        client = Client()
        client.force_login(user)
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                              "url": live_server.url}])
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
    # Database connections opened while Playwright's loop runs belong to that context; close them
    # here, or PostgreSQL refuses to drop the test database ("being accessed by other users").
    from django.db import connections

    connections.close_all()
