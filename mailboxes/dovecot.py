"""Dovecot serves the Maildir tree over IMAP and POP3 and asks us who may log in.

Authentication goes through Dovecot's checkpassword interface into `check_login` below, i.e.
into SMTP AUTH's own verification (delivery.smtp_auth.verify): disabled mailboxes and domains are
refused, the mailbox password (argon2id) and the mailbox's app passwords ({SSHA512}) are
accepted. Why checkpassword and not `passdb sql`: an account may hold any number of app
passwords, and Dovecot's sql passdb refuses a password query that returns more than one row
("Password query returned multiple matches"); SQLite has no SHA-512 function to pick the row in
SQL; and the rules for "may log in" stay in one place (Python) for SQLite and PostgreSQL alike,
with no extra Dovecot SQL driver package. The price is one short process per login (about 0.5 s:
Python, Django, one argon2 check); Dovecot's auth cache does not apply to checkpassword, which
also means a suspended account is refused at its very next login.
"""

from __future__ import annotations

import getpass
import grp
import os
import pwd
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from delivery import smtp_auth
from delivery.tls import certificate_paths
from mailhost.addresses import AddressError, normalize_address

from .models import Mailbox

# Dovecot's checkpassword exit codes (doc: AuthDatabase/CheckPassword).
EXIT_MISMATCH = 1
EXIT_UNKNOWN_USER = 3
EXIT_TEMPFAIL = 111

LOGIN_USER_FOR_ROOT = "dovenull"


def find_mailbox(login: str) -> Mailbox | None:
    try:
        address = normalize_address(login)
    except AddressError:
        return None
    return (Mailbox.objects.select_related("domain", "user")
            .filter(user__username=address).first())


def check_login(login: str, password: str) -> Mailbox | None:
    """The mailbox `login`/`password` opens, or None: SMTP AUTH's own check (delivery.smtp_auth).

    A domain relay credential proves no mailbox, so it opens nothing here.
    """
    identity = smtp_auth.verify(login, password)
    if identity is None or identity.mailbox_id is None:
        return None
    mailbox = Mailbox.objects.select_related("domain", "user").filter(pk=identity.mailbox_id).first()
    return mailbox if mailbox is not None and mailbox.can_receive else None


def userdb_fields(mailbox: Mailbox) -> dict[str, str]:
    """What Dovecot's userdb needs: canonical name, home (= the Maildir, INBOX) and quota."""
    fields = {"USER": mailbox.address, "HOME": str(mailbox.maildir),
              # checkpassword-reply would otherwise report its own uid (root under a root Dovecot).
              "userdb_uid": os.environ.get("MAILHOST_MAIL_UID", str(os.getuid())),
              "userdb_gid": os.environ.get("MAILHOST_MAIL_GID", str(os.getgid()))}
    if mailbox.quota:
        fields["userdb_quota_rule"] = f"*:bytes={mailbox.quota}"
    return fields


def checkpassword(reply_program: str, fd: int = 3) -> int:
    """Run Dovecot's checkpassword protocol: read `user\\0password\\0` from fd 3, exec the reply.

    For userdb-only lookups (doveadm, LMTP) Dovecot sets AUTHORIZED=1
    and sends no password; we answer with the user's fields and AUTHORIZED=2 as the protocol asks.
    """
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
        if len(data) > 4096:
            break
    parts = data.split(b"\0")
    if len(parts) < 2:
        return EXIT_TEMPFAIL
    login, password = parts[0].decode("utf-8", "replace"), parts[1].decode("utf-8", "replace")
    env = dict(os.environ)
    try:
        if env.get("AUTHORIZED") == "1":
            mailbox = find_mailbox(login)
            if mailbox is None or not mailbox.can_receive:
                return EXIT_UNKNOWN_USER
            env["AUTHORIZED"] = "2"
        else:
            mailbox = check_login(login, password)
            if mailbox is None:
                return EXIT_UNKNOWN_USER if find_mailbox(login) is None else EXIT_MISMATCH
    except Exception as exc:   # the database is down: a temporary failure, never a "no such user"
        print(f"checkpassword: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    fields = userdb_fields(mailbox)
    env.update(fields)
    env["EXTRA"] = " ".join(k for k in fields if k.startswith("userdb_"))
    os.execve(reply_program, [reply_program], env)
    return EXIT_TEMPFAIL  # not reached


# --- configuration -------------------------------------------------------------------------

@dataclass
class Listeners:
    """host:port pairs (None: off) for the four Dovecot listeners."""

    imap: tuple[str, int] | None = ("127.0.0.1", 2143)
    pop3: tuple[str, int] | None = ("127.0.0.1", 2110)
    imaps: tuple[str, int] | None = None
    pop3s: tuple[str, int] | None = None


def database_url(db: dict | None = None) -> str:
    """The URL of the database this process uses (in tests: the test database)."""
    db = db or settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "postgres", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


FALLBACK_MAIL_USER = "mail"   # Debian's system account for mail spools


def mail_owner(mail_user: str | None = None) -> tuple[int, int, str]:
    """uid/gid Dovecot reads mail as, and a warning for the operator ('' when all is well).

    The account is `mail_user` when given, else the owner of MAIL_ROOT (the account that runs
    mailhost). Dovecot never accesses mail as root ("userdb returned 0 as uid"), so a root-owned
    MAIL_ROOT gets the `mail` system account and a warning saying what to chown: the configuration
    is still printed, since the contract is to print one.
    """
    if mail_user:
        try:
            entry = pwd.getpwnam(mail_user)
        except KeyError as exc:
            raise ImproperlyConfigured(f"--mail-user: there is no account {mail_user!r}") from exc
        if entry.pw_uid == 0:
            raise ImproperlyConfigured("--mail-user: Dovecot never reads mail as root")
        return entry.pw_uid, entry.pw_gid, ""
    mail_root = Path(settings.MAIL_ROOT)
    mail_root.mkdir(parents=True, exist_ok=True)
    st = mail_root.stat()
    if st.st_uid != 0:
        return st.st_uid, st.st_gid, ""
    entry = pwd.getpwnam(FALLBACK_MAIL_USER)
    return entry.pw_uid, entry.pw_gid, (
        f"MAIL_ROOT {mail_root} is owned by root and Dovecot never reads mail as root: this "
        f"configuration reads it as {FALLBACK_MAIL_USER!r} (uid {entry.pw_uid}); run mailhost as that "
        f"account (chown -R {FALLBACK_MAIL_USER}: {mail_root}) or pass --mail-user"
    )


def write_checkpassword_program(base_dir: Path, uid: int, gid: int) -> Path:
    """A wrapper Dovecot can exec (it passes no arguments of ours), with our settings baked in.

    Mode 0700: it may carry the database password.
    """
    program = base_dir / "checkpassword"
    env = {
        "DATABASE_URL": database_url(),
        "MAIL_ROOT": str(settings.MAIL_ROOT),
        "MAIL_HOSTNAME": settings.MAIL_HOSTNAME,
        "SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_SETTINGS_MODULE": "mailhost.settings",
        "MAILHOST_MAIL_UID": str(uid),
        "MAILHOST_MAIL_GID": str(gid),
    }
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    manage = Path(settings.BASE_DIR) / "manage.py"
    text = (f"#!/bin/sh\n# Written by `manage.py dovecotconf`: Dovecot's checkpassword program.\n{exports}\n"
            f"exec {shlex.quote(sys.executable)} {shlex.quote(str(manage))} dovecotauth \"$@\"\n")
    fd = os.open(program, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(program, 0o700)
    return program


def _listener(name: str, addr: tuple[str, int] | None, ssl: bool) -> str:
    if addr is None:
        return f"  inet_listener {name} {{\n    port = 0\n  }}\n"
    host, port = addr
    return (f"  inet_listener {name} {{\n    address = {host}\n    port = {port}\n"
            f"{'    ssl = yes' + chr(10) if ssl else ''}  }}\n")


def render_config(base_dir: Path, listeners: Listeners, mail_user: str | None = None,
                  warn=lambda message: None) -> str:
    """The whole dovecot.conf; support files (checkpassword wrapper, TLS pair) are written first.

    Mail processes run as the owner of MAIL_ROOT (the account whose SMTP service writes the
    Maildir files with mode 0600); auth runs as the account that generated the configuration, so
    it reaches the same database. Started by that account, Dovecot needs no root at all (except to
    bind ports < 1024); started by root, its login processes run as `dovenull`, chrooted.
    State, sockets and logs live under `base_dir`.
    """
    base_dir = Path(base_dir).resolve()
    for sub in ("run", "state"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    uid, gid, warning = mail_owner(mail_user)
    if warning:
        warn(warning)
    program = write_checkpassword_program(base_dir, uid, gid)
    cert, key = certificate_paths()   # the SMTP service's pair: one certificate for the host
    # Auth runs as whoever generated the configuration: that account reaches the database.
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    # Dovecot refuses to run its network-facing login processes as root: when started as
    # root they run as Debian's unprivileged `dovenull`, chrooted to base_dir/run/login.
    login_user, chroot = (LOGIN_USER_FOR_ROOT, "login") if os.getuid() == 0 else (user, "")
    mail_root = Path(settings.MAIL_ROOT).resolve()
    protocols = " ".join(p for p, on in (("imap", listeners.imap or listeners.imaps),
                                         ("pop3", listeners.pop3 or listeners.pop3s)) if on)
    return f"""\
# Generated by `manage.py dovecotconf`; regenerate rather than edit. Dovecot 2.3.
# Start: dovecot -F -c <this file>
instance_name = mailhost-{abs(hash(str(base_dir))) % 10**8}
base_dir = {base_dir}/run
state_dir = {base_dir}/state
log_path = {base_dir}/dovecot.log
info_log_path = {base_dir}/dovecot.log
protocols = {protocols or "none"}
listen = *, ::

# Mail is read as the owner of MAIL_ROOT; Dovecot's own processes run as {user}.
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}

# TLS: STARTTLS on 143/110 (or the development ports), implicit TLS on 993/995.
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
ssl_prefer_server_ciphers = yes
disable_plaintext_auth = yes
auth_mechanisms = plain login

# Authentication: our database, through Django (see mailboxes/dovecot.py for why).
passdb {{
  driver = checkpassword
  args = {program}
}}
userdb {{
  driver = prefetch
}}
userdb {{
  driver = checkpassword
  args = {program}
}}

# Mail: <MAIL_ROOT>/<domain>/<local part>/ is a Maildir whose root is INBOX, Maildir++ subfolders.
mail_home = {mail_root}/%d/%n
mail_location = maildir:~
mail_privileged_group =
maildir_stat_dirs = yes
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}

# Quota: Mailbox.quota arrives as userdb_quota_rule; usage counted from the index.
mail_plugins = $mail_plugins quota
plugin {{
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = *:storage=0
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
pop3_uidl_format = %08Xu%08Xv

service imap-login {{
  chroot = {chroot}
  user = {login_user}
{_listener("imap", listeners.imap, False)}{_listener("imaps", listeners.imaps, True)}}}
service pop3-login {{
  chroot = {chroot}
  user = {login_user}
{_listener("pop3", listeners.pop3, False)}{_listener("pop3s", listeners.pop3s, True)}}}
service auth {{
  user = {user}
}}
service auth-worker {{
  user = {user}
}}
service anvil {{
  chroot = {chroot and "empty"}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0
  }}
}}
"""
