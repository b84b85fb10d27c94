import json

from django.core.management.base import BaseCommand, CommandError

from domains.dns_checks import record_checks, required_ok, run_checks
from domains.models import Domain
from mailhost.addresses import AddressError, normalize_domain


class Command(BaseCommand):
    help = ("Check a hosted domain's DNS records live. Exit 0 when MX, SPF, DKIM and DMARC are right, "
            "1 when one is wrong, missing or cannot be looked up; warnings never change the exit code.")

    def add_arguments(self, parser):
        parser.add_argument("name", help="hosted domain (U-label or A-label)")
        parser.add_argument("--json", action="store_true", help='print a JSON list of {"check", "status", '
                            '"found", "expected", "hint"}')

    def handle(self, name, **options):
        try:
            domain = Domain.objects.get(name=normalize_domain(name))
        except (AddressError, Domain.DoesNotExist) as exc:
            raise CommandError(f"{name} is not a hosted domain", returncode=2) from exc
        results = run_checks(domain)
        record_checks(domain, results)
        if options["json"]:
            self.stdout.write(json.dumps([r.as_json() for r in results], indent=2))
        else:
            for r in results:
                line = f"{r.status.upper():8} {r.check:18} found: {r.found}  expected: {r.expected}"
                line += f"  fix: {r.hint}" if r.hint else ""
                # one line per check, whatever a TXT record on the wire contains
                self.stdout.write(" ".join(line.splitlines()))
        if not required_ok(results):
            raise SystemExit(1)
