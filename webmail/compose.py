"""What the compose form starts with for a reply or a forward, and the Draft it sends."""

from __future__ import annotations

import email.utils

from .maildir_reader import MESSAGE_KEY, Maildir, NotFound, header_text, parse_message
from .rendering import attachment_part, plain_text, render
from .sending import Draft, Upload


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def _prefixed(prefix: str, subject: str) -> str:
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}".strip()


def initial(maildir: Maildir, original, mode: str, own_address: str) -> dict:
    msg = parse_message(maildir.read(original))
    subject = header_text(msg, "Subject")
    sender = header_text(msg, "From")
    if mode == "forward":
        header = "\n".join(f"{name}: {header_text(msg, name)}" for name in ("From", "Date", "Subject", "To")
                           if header_text(msg, name))
        return {"subject": _prefixed("Fwd:", subject),
                "body": f"\n\n---------- Forwarded message ----------\n{header}\n\n{plain_text(msg)}",
                "forward_of": f"{original.folder}/{original.key}"}
    reply_to = header_text(msg, "Reply-To") or sender
    message_id = header_text(msg, "Message-ID")
    to = [a for _n, a in email.utils.getaddresses([reply_to]) if a.lower() != own_address]
    data = {"to": ", ".join(to), "subject": _prefixed("Re:", subject),
            "body": f"\n\nOn {header_text(msg, 'Date')}, {sender} wrote:\n{_quote(plain_text(msg))}\n",
            "in_reply_to": message_id, "references": header_text(msg, "References")}
    if mode == "reply_all":
        others = email.utils.getaddresses([header_text(msg, "To"), header_text(msg, "Cc")])
        data["cc"] = ", ".join(a for _n, a in others if a and a.lower() != own_address and a not in to)
    return data


def forwarded_attachments(maildir: Maildir, forward_of: str) -> list[Upload]:
    """The original's attachments, for a forward; only from this user's own Maildir."""
    folder, _, key = forward_of.partition("/")
    if not MESSAGE_KEY.match(key):
        return []
    try:
        msg = parse_message(maildir.read(maildir.find(folder, key)))
    except NotFound:
        return []
    uploads = []
    for att in render(msg).attachments:
        part = attachment_part(msg, att.index)
        uploads.append(Upload(att.filename, att.content_type, part.get_payload(decode=True) or b""))
    return uploads


def draft_from_form(maildir: Maildir, data: dict) -> Draft:
    uploads = [Upload(f.name, f.content_type or "application/octet-stream", f.read())
               for f in data.get("attachments") or []]
    if data.get("forward_of"):
        uploads = forwarded_attachments(maildir, data["forward_of"]) + uploads
    return Draft(from_address=data["from_address"], to=data["to"], cc=data["cc"], bcc=data["bcc"],
                 subject=data["subject"], body=data["body"], attachments=uploads,
                 in_reply_to=data.get("in_reply_to", ""), references=data.get("references", ""))
