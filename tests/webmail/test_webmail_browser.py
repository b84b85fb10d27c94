"""Webmail in real Chromium: reading and replying, and hostile HTML rendered harmless."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webmail.maildir_reader import Maildir, parse_message

from .conftest import deliver, make_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_reads_a_message_and_the_reply_arrives_in_the_other_mailbox(logged_in_page, live_server, bob, carol):
    original = make_message("Lunch plans", body="Shall we meet at noon?\n")
    deliver(bob, original)
    page = logged_in_page(bob.user)
    page.goto(f"{live_server.url}/webmail/")
    page.get_by_role("link", name="Lunch plans").click()
    assert "Shall we meet at noon?" in page.locator("#message-body").inner_text()
    page.click("#reply")
    assert page.input_value("input[name=to]") == "carol@example.org"
    page.fill("textarea[name=body]", "Noon works for me.")
    page.click("#send")
    page.wait_for_url(f"{live_server.url}/webmail/f/INBOX/")
    assert "Message sent." in page.content()
    [reply] = Maildir(carol.maildir).messages("INBOX")
    msg = parse_message(reply.path.read_bytes())
    assert msg["Subject"] == "Re: Lunch plans"
    assert msg["In-Reply-To"] == parse_message(original)["Message-ID"]
    assert msg["From"] == "Bob <bob@example.org>"
    assert "Noon works for me." in msg.get_body(("plain",)).get_content()


class CountingServer(ThreadingHTTPServer):
    """The "remote" web server a tracking image points at; it counts every request."""

    hits: list[str]


class CountingHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, *args):
        pass


@pytest.fixture
def remote_web():
    server = CountingServer(("127.0.0.1", 0), CountingHandler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_hostile_html_mail_renders_harmless(logged_in_page, live_server, bob, remote_web):
    remote = f"http://127.0.0.1:{remote_web.server_address[1]}"
    html = f"""<html><head><style>body {{ background: url({remote}/bg.png) }}</style></head><body>
      <p id="greeting">Hello <b>Bob</b></p>
      <script>window.pwned = "script"</script>
      <img src="x" onerror="window.pwned = 'onerror'">
      <a id="js-link" href="javascript:window.pwned = 'javascript-link'">click me</a>
      <a id="ok-link" href="https://example.com/" onclick="window.pwned = 'onclick'">a site</a>
      <div onmouseover="window.pwned = 'hover'">hover</div>
      <svg onload="window.pwned = 'svg'"></svg>
      <iframe src="{remote}/frame"></iframe>
      <img id="tracker" src="{remote}/track.gif" alt="tracker">
    </body></html>"""
    path = deliver(bob, make_message("Newsletter", body="plain version", html=html))
    page = logged_in_page(bob.user)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live_server.url}/webmail/f/INBOX/{path.rsplit('/', 1)[1]}/")
    page.wait_for_load_state("networkidle")
    body = page.locator("#message-body")
    assert body.locator("p").first.inner_text() == "Hello Bob"   # nh3 drops ids: find things by text
    assert body.locator("script, iframe, style, svg").count() == 0
    handlers = page.evaluate("""() => [...document.querySelectorAll('#message-body *')]
        .flatMap(el => [...el.attributes].map(a => a.name)).filter(n => n.startsWith('on'))""")
    assert handlers == []
    assert body.locator("a[href^='javascript']").count() == 0
    assert body.locator("a", has_text="a site").get_attribute("rel") == "noopener noreferrer nofollow"
    assert body.locator(f"img[src^='{remote}']").count() == 0
    body.locator("a", has_text="click me").click()
    page.hover("text=hover")
    assert page.evaluate("window.pwned") is None and dialogs == []
    assert remote_web.hits == []
    assert "1 remote image blocked" in page.inner_text("#images-blocked")

    page.click("#show-images")
    page.wait_for_load_state("networkidle")
    assert body.locator(f"img[src='{remote}/track.gif']").count() == 1
    assert remote_web.hits == ["/track.gif"]
    assert page.evaluate("window.pwned") is None
