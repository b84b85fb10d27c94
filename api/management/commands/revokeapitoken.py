from django.core.management.base import BaseCommand, CommandError

from api.models import ApiToken


class Command(BaseCommand):
    help = "Revoke an API token by its prefix (the first characters, as listed in the admin), or all of an account's."

    def add_arguments(self, parser):
        parser.add_argument("prefix", nargs="?", help="e.g. mh_Ab12Cd")
        parser.add_argument("--account", help="revoke every token of this login instead")

    def handle(self, prefix=None, account=None, **options):
        tokens = ApiToken.objects.filter(revoked_at=None)
        if account:
            tokens = tokens.filter(user__username__iexact=account)
        elif prefix:
            tokens = tokens.filter(prefix=prefix)
            if tokens.count() > 1:
                raise CommandError(f"{tokens.count()} tokens start with {prefix}; revoke them in the admin")
        else:
            raise CommandError("give a token prefix or --account")
        revoked = [str(t) for t in tokens.select_related("user")]
        if not revoked:
            raise CommandError("no active token matches")
        for token in tokens:
            token.revoke()
        for line in revoked:
            self.stdout.write(f"revoked {line}")
