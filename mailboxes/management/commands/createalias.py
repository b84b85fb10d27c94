from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mailboxes.provisioning import create_alias


class Command(BaseCommand):
    help = "Add an alias or forward (ADDRESS, or @domain for a catch-all) to local or remote DESTs."

    def add_arguments(self, parser):
        parser.add_argument("address")
        parser.add_argument("destinations", nargs="+", metavar="DEST")

    def handle(self, address, destinations, **options):
        try:
            alias = create_alias(address, destinations)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"created alias {alias}")
