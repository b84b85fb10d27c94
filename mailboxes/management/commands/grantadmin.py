from django.core.management.base import BaseCommand, CommandError

from domains.models import Domain
from mailboxes.models import User
from mailhost.addresses import AddressError, normalize_address, normalize_domain


class Command(BaseCommand):
    help = "Make an account (a mailbox address or an admin login) an administrator of DOMAIN."

    def add_arguments(self, parser):
        parser.add_argument("account")
        parser.add_argument("domain")

    def handle(self, account, domain, **options):
        try:
            name = normalize_domain(domain)
            login = normalize_address(account) if "@" in account else account
        except AddressError as exc:
            raise CommandError(str(exc)) from exc
        target = Domain.objects.filter(name=name).first()
        if target is None:
            raise CommandError(f"{name} is not a hosted domain")
        user = User.objects.filter(username=login).first()
        if user is None:
            raise CommandError(f"no account {login!r}; create it with createmailbox or createsuperuser")
        target.admins.add(user)
        self.stdout.write(f"{login} now administers {name}")
