import sys

from django.core.management.base import BaseCommand, CommandError

from api.models import ApiToken
from mailboxes.models import User
from mailhost.addresses import AddressError, normalize_address


class Command(BaseCommand):
    help = "Create an API token for ACCOUNT (a mailbox address or an admin login) and print it once."

    def add_arguments(self, parser):
        parser.add_argument("account")
        parser.add_argument("--name", default="", help="what the token is for, e.g. 'billing sync'")

    def handle(self, account, name="", **options):
        try:
            login = normalize_address(account) if "@" in account else account
        except AddressError as exc:
            raise CommandError(str(exc)) from exc
        user = User.objects.filter(username=login).first()
        if user is None:
            raise CommandError(f"no account {login!r}; create it with createmailbox or createsuperuser")
        if not user.is_active:
            raise CommandError(f"account {login!r} is disabled")
        token, plaintext = ApiToken.issue(user, name)
        # The token alone on stdout so scripts can capture it; the explanation on stderr.
        self.stdout.write(plaintext)
        sys.stderr.write(f"API token {token.prefix}… for {login} ({user.role}); it is not shown again. "
                         "Send it as 'Authorization: Bearer <token>'.\n")
