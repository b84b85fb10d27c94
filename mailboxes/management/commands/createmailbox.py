import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mailboxes.provisioning import create_mailbox
from mailhost.sizes import parse_size


class Command(BaseCommand):
    help = "Add a mailbox that can log in to the portal, SMTP AUTH and IMAP."

    def add_arguments(self, parser):
        parser.add_argument("address")
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--password")
        group.add_argument("--password-stdin", action="store_true",
                           help="read the password from the first line of standard input")
        parser.add_argument("--quota", help="e.g. 500M, 2G, 0 for none; default: the domain's")
        parser.add_argument("--name", default="", help="display name")

    def handle(self, address, password=None, password_stdin=False, quota=None, name="", **options):
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        try:
            mailbox = create_mailbox(address, password, display_name=name,
                                     quota=None if quota is None else parse_size(quota))
        except (ValidationError, ValueError) as exc:
            messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
            raise CommandError("; ".join(messages)) from exc
        self.stdout.write(f"created mailbox {mailbox.address} ({mailbox.maildir})")
