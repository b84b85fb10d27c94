"""Reading and changing one user's Maildir the way Dovecot does, so IMAP and webmail agree.

Layout (DESIGN.md): the mailbox directory is INBOX; other folders are Maildir++ subdirectories
`.Name` (`.Parent.Child` for nesting). Flags live in the file name: a message in new/ is unseen
and has no flags; once looked at it moves to cur/ as `<unique>:2,<flags>` with the flag letters
in ASCII order (D draft, F flagged, R replied, S seen, T trashed), exactly what Dovecot writes and
reads. A message is identified by its unique part, which never changes when flags do.

Nothing here takes a path from the outside: folder names must be folders that exist (or the
special ones webmail creates), message keys must match a strict pattern.
"""

from __future__ import annotations

import base64
import email.policy
import os
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path

from delivery import maildir as maildir_store

INBOX = "INBOX"
SPECIAL_FOLDERS = ("Drafts", "Sent", "Junk", "Trash")
MESSAGE_KEY = re.compile(r"^[0-9][A-Za-z0-9._,=-]{0,200}$")
FOLDER_NAME = re.compile(r"^[A-Za-z0-9_&+ -][A-Za-z0-9_&+,. -]{0,100}$")
HEADER_BYTES = 64 * 1024


class NotFound(Exception):
    """No such folder or message in this Maildir: the view answers 404."""


@dataclass
class MessageFile:
    folder: str
    key: str
    path: Path
    flags: str
    mtime: float
    size: int

    @property
    def seen(self) -> bool:
        return "S" in self.flags


@dataclass
class Summary:
    file: MessageFile
    subject: str
    sender: str
    date: str


def split_name(name: str) -> tuple[str, str]:
    """`unique:2,FLAGS` -> (unique, FLAGS); a name without an info part has no flags."""
    key, sep, info = name.partition(":")
    return key, info[2:] if sep and info.startswith("2,") else ""


def parse_headers(data: bytes) -> EmailMessage:
    return BytesHeaderParser(policy=email.policy.default).parsebytes(data)


def parse_message(data: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(data)


def header_text(msg, name: str) -> str:
    """A header as text; a malformed header shows raw rather than breaking the page."""
    try:
        value = msg[name]
    except Exception:  # the email package raises on some broken encodings
        value = msg.get_all(name, [""])[0] if hasattr(msg, "get_all") else ""
    return "" if value is None else str(value)


def folder_label(folder: str) -> str:
    """How a folder reads to people: Maildir++ `.` nesting shown as `/`, IMAP's modified UTF-7
    (RFC 3501 5.1.3: `Caf&AOk-` is Café, as Dovecot names folders created over IMAP) decoded."""
    out, i = [], 0
    while i < len(folder):
        if folder[i] == "&" and "-" in folder[i:]:
            end = folder.index("-", i)
            chunk = folder[i + 1:end]
            try:
                raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
                out.append(raw.decode("utf-16-be") if chunk else "&")
            except (ValueError, UnicodeDecodeError):
                out.append(folder[i:end + 1])
            i = end + 1
        else:
            out.append("/" if folder[i] == "." else folder[i])
            i += 1
    return "".join(out)


class Maildir:
    def __init__(self, root: Path):
        self.root = Path(root)

    # folders ---------------------------------------------------------------------------------
    def folders(self) -> list[str]:
        names = [INBOX]
        found = set()
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                name = entry.name[1:]
                if (entry.name.startswith(".") and entry.is_dir() and FOLDER_NAME.match(name)
                        and ".." not in name and (Path(entry.path) / "cur").is_dir()):
                    found.add(name)
        names += SPECIAL_FOLDERS   # always offered; created on first use
        names += sorted(found - set(SPECIAL_FOLDERS), key=str.lower)
        return names

    def folder_choices(self) -> list[tuple[str, str]]:
        return [(f, folder_label(f)) for f in self.folders()]

    def folder_path(self, folder: str) -> Path:
        if folder == INBOX:
            return self.root
        if folder not in self.folders():
            raise NotFound(folder)
        return self.root / f".{folder}"

    def ensure_folder(self, folder: str) -> Path:
        path = self.folder_path(folder)
        maildir_store.ensure_maildir(path)
        if folder != INBOX:
            (path / "maildirfolder").touch()   # Maildir++ marks subfolders this way
        return path

    # messages --------------------------------------------------------------------------------
    def messages(self, folder: str) -> list[MessageFile]:
        """Every message of a folder, newest first."""
        base = self.folder_path(folder)
        out = []
        for sub in ("new", "cur"):
            directory = base / sub
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                key, flags = split_name(entry.name)
                if not MESSAGE_KEY.match(key):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:   # moved by Dovecot meanwhile
                    continue
                out.append(MessageFile(folder, key, Path(entry.path), flags if sub == "cur" else "",
                                       st.st_mtime, st.st_size))
        out.sort(key=lambda m: (m.mtime, m.key), reverse=True)
        return out

    def summary(self, msg: MessageFile) -> Summary:
        with open(msg.path, "rb") as f:
            head = parse_headers(f.read(HEADER_BYTES))
        return Summary(msg, header_text(head, "Subject"), header_text(head, "From"), header_text(head, "Date"))

    def summaries(self, messages: list[MessageFile]) -> list[Summary]:
        """Summaries of a page of messages; one Dovecot renamed meanwhile is found again, one it
        expunged is left out."""
        out = []
        for msg in messages:
            try:
                out.append(self.summary(msg))
            except FileNotFoundError:
                try:
                    out.append(self.summary(self.find(msg.folder, msg.key)))
                except (NotFound, FileNotFoundError):
                    continue
        return out

    def search(self, folder: str, query: str) -> list[MessageFile]:
        """Messages whose sender or subject contains `query` (case-insensitive)."""
        query = query.casefold()
        hits = []
        for msg in self.messages(folder):
            try:
                s = self.summary(msg)
            except FileNotFoundError:
                continue
            if query in s.subject.casefold() or query in s.sender.casefold():
                hits.append(msg)
        return hits

    def find(self, folder: str, key: str) -> MessageFile:
        if not MESSAGE_KEY.match(key):
            raise NotFound(key)
        base = self.folder_path(folder)
        new = base / "new" / key
        if new.is_file():
            st = new.stat()
            return MessageFile(folder, key, new, "", st.st_mtime, st.st_size)
        cur = base / "cur"
        if cur.is_dir():
            for entry in os.scandir(cur):
                name_key, flags = split_name(entry.name)
                if name_key == key:
                    st = entry.stat()
                    return MessageFile(folder, key, Path(entry.path), flags, st.st_mtime, st.st_size)
        raise NotFound(key)

    def read(self, msg: MessageFile) -> bytes:
        try:
            return msg.path.read_bytes()
        except FileNotFoundError:   # renamed by Dovecot (flags) since we looked
            try:
                return self.find(msg.folder, msg.key).path.read_bytes()
            except FileNotFoundError:
                raise NotFound(msg.key) from None

    # changes ---------------------------------------------------------------------------------
    def set_flags(self, msg: MessageFile, add: str = "", remove: str = "", retry: bool = True) -> MessageFile:
        """Rename into cur/ with the new flag letters, as Dovecot does for IMAP STORE."""
        flags = "".join(sorted((set(msg.flags) | set(add)) - set(remove)))
        target = msg.path.parent.parent / "cur" / f"{msg.key}:2,{flags}"
        if target != msg.path:
            try:
                os.rename(msg.path, target)
            except FileNotFoundError:
                if not retry:
                    raise NotFound(msg.key) from None
                # Dovecot renamed it meanwhile (new/ -> cur/, or other flags): start from its new name.
                return self.set_flags(self.find(msg.folder, msg.key), add, remove, retry=False)
        return MessageFile(msg.folder, msg.key, target, flags, msg.mtime, msg.size)

    def mark_seen(self, msg: MessageFile) -> MessageFile:
        return self.set_flags(msg, add="S")

    def move(self, msg: MessageFile, folder: str, retry: bool = True) -> MessageFile:
        target_dir = self.ensure_folder(folder) / "cur"
        target = target_dir / f"{msg.key}:2,{msg.flags}"
        try:
            os.rename(msg.path, target)
        except FileNotFoundError:
            if not retry:
                raise NotFound(msg.key) from None
            return self.move(self.find(msg.folder, msg.key), folder, retry=False)
        return MessageFile(folder, msg.key, target, msg.flags, msg.mtime, msg.size)

    def delete(self, msg: MessageFile) -> None:
        msg.path.unlink(missing_ok=True)

    def store(self, folder: str, data: bytes, flags: str = "") -> MessageFile:
        """Deliver `data` into a folder (durably, via delivery.maildir) with the given flags."""
        path = maildir_store.deliver(self.ensure_folder(folder), data)
        st = path.stat()
        msg = MessageFile(folder, path.name, path, "", st.st_mtime, st.st_size)
        return self.set_flags(msg, add=flags) if flags else msg
