"""Print a Dovecot 2.3 configuration that serves MAIL_ROOT and authenticates against our database."""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from mailboxes.dovecot import Listeners, render_config
from mailhost.settings import host_port


def listener(option: str, value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    try:
        return host_port(option, value)
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from exc


class Command(BaseCommand):
    help = "Print a Dovecot configuration (IMAP/POP3 on MAIL_ROOT, auth against the database)."

    def add_arguments(self, parser):
        parser.add_argument("--imap", default="127.0.0.1:2143", help="IMAP with STARTTLS (production 0.0.0.0:143)")
        parser.add_argument("--pop3", default="127.0.0.1:2110", help="POP3 with STARTTLS (production 0.0.0.0:110)")
        parser.add_argument("--imaps", default="off", help="IMAP with implicit TLS, e.g. 0.0.0.0:993")
        parser.add_argument("--pop3s", default="off", help="POP3 with implicit TLS, e.g. 0.0.0.0:995")
        parser.add_argument("--base-dir", default=str(Path(settings.VAR_DIR) / "dovecot"),
                            help="where Dovecot keeps sockets, state, logs and the auth program")
        parser.add_argument("--mail-user", help="account Dovecot reads mail as (default: the owner of MAIL_ROOT)")

    def handle(self, *args, **opts):
        listeners = Listeners(
            imap=listener("--imap", opts["imap"]), pop3=listener("--pop3", opts["pop3"]),
            imaps=listener("--imaps", opts["imaps"]), pop3s=listener("--pop3s", opts["pop3s"]),
        )
        try:
            config = render_config(Path(opts["base_dir"]), listeners, opts["mail_user"],
                                   warn=lambda message: self.stderr.write(f"warning: {message}"))
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(config, ending="")
