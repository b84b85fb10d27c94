"""Portal login: a full mail address (any case, U-label domain) or an admin account name."""

from django.contrib.auth.backends import ModelBackend

from mailhost.addresses import AddressError, normalize_address


class MailAccountBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username and "@" in username:
            try:
                username = normalize_address(username)
            except AddressError:
                return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            return None
        mailbox = getattr(user, "mailbox", None)
        if mailbox is not None and not mailbox.can_receive and not user.is_domain_admin:
            return None
        return user
