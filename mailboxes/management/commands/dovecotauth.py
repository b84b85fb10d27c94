"""Dovecot's checkpassword program (called by the wrapper `dovecotconf` writes; not for people)."""

import sys

from django.core.management.base import BaseCommand

from mailboxes.dovecot import checkpassword


class Command(BaseCommand):
    help = "Dovecot checkpassword interface: reads user and password from fd 3, execs the reply program."

    def add_arguments(self, parser):
        parser.add_argument("reply_program")

    def handle(self, *args, **opts):
        sys.exit(checkpassword(opts["reply_program"]))
