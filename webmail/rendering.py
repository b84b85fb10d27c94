"""Turning a stored message into something safe to show: text, sanitised HTML, attachments.

HTML mail is cleaned with nh3 (ammonia): no scripts, no event handlers, no `javascript:` URLs,
no styles, forms or frames. Remote images are dropped until the reader asks for them, because an
image URL tells the sender when and where the mail was opened. The page also carries a
Content-Security-Policy, so a sanitiser bug alone cannot run script or load remote images.
"""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass, field
from email.message import EmailMessage

import nh3

from .maildir_reader import header_text

URL_SCHEMES = {"http", "https", "mailto"}
SHOWN_HEADERS = ("Subject", "From", "To", "Cc", "Date")


@dataclass
class Attachment:
    index: int          # position among the message's leaf parts (stable for a given message)
    filename: str
    content_type: str
    size: int


@dataclass
class Rendered:
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    html: str = ""
    blocked_images: int = 0
    attachments: list[Attachment] = field(default_factory=list)


def is_remote(url: str) -> bool:
    url = url.strip().lower()
    return url.startswith(("http:", "https:", "//"))


def sanitize_html(html: str, allow_remote_images: bool = False) -> tuple[str, int]:
    """Clean HTML; returns the safe markup and how many remote images were held back."""
    blocked = 0

    def keep_attribute(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attribute == "src" and not allow_remote_images and is_remote(value):
            blocked += 1
            return None
        return value

    clean = nh3.clean(html, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer nofollow",
                      attribute_filter=keep_attribute, set_tag_attribute_values={"a": {"target": "_blank"}})
    return clean, blocked


def leaves(msg: EmailMessage) -> list[EmailMessage]:
    return [part for part in msg.walk() if not part.is_multipart()]


def decoded_text(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def render(msg: EmailMessage, allow_remote_images: bool = False) -> Rendered:
    out = Rendered(headers={name.lower(): header_text(msg, name) for name in SHOWN_HEADERS})
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    if plain is not None:
        out.text = decoded_text(plain)
    if html is not None:
        out.html, out.blocked_images = sanitize_html(decoded_text(html), allow_remote_images)
    for index, part in enumerate(leaves(msg)):
        if part is plain or part is html:
            continue
        inline_text = part.get_content_maintype() == "text" and part.get_content_disposition() != "attachment"
        if inline_text and not part.get_filename():
            continue
        payload = part.get_payload(decode=True) or b""
        out.attachments.append(Attachment(index, part.get_filename() or f"part-{index}",
                                          part.get_content_type(), len(payload)))
    return out


def attachment_part(msg: EmailMessage, index: int) -> EmailMessage | None:
    parts = leaves(msg)
    return parts[index] if 0 <= index < len(parts) else None


def plain_text(msg: EmailMessage) -> str:
    """The text to quote in a reply or forward: the plain part, or the HTML stripped of tags."""
    plain = msg.get_body(preferencelist=("plain",))
    if plain is not None:
        return decoded_text(plain)
    html = msg.get_body(preferencelist=("html",))
    if html is not None:
        return html_lib.unescape(nh3.clean(decoded_text(html), tags=set()))
    return ""
