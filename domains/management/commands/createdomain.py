from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from domains.provisioning import create_domain
from domains.records import zone_file


class Command(BaseCommand):
    help = "Add a hosted domain (IDN accepted), make its DKIM key and print the DNS records."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, name, **options):
        try:
            domain = create_domain(name)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(zone_file(domain), ending="")
