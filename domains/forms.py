from django import forms
from django.core.exceptions import ValidationError

from mailboxes.models import User
from mailhost.addresses import AddressError, normalize_address, normalize_domain
from portal.forms import SizeField

from .models import DkimKey, Domain, DomainAlias


class DomainCreateForm(forms.Form):
    name = forms.CharField(max_length=253, help_text="e.g. example.org or bücher.example (IDN welcome)")
    max_mailboxes = forms.IntegerField(min_value=0, initial=0, help_text="0 for no limit")
    max_aliases = forms.IntegerField(min_value=0, initial=0, help_text="0 for no limit")
    default_quota = SizeField(initial="1G")
    max_quota = SizeField(initial="0")

    def clean_name(self) -> str:
        try:
            return normalize_domain(self.cleaned_data["name"])
        except AddressError as exc:
            raise ValidationError(str(exc)) from exc

    def fields_for_model(self) -> dict:
        data = dict(self.cleaned_data)
        data.pop("name")
        return {k: v for k, v in data.items() if v is not None}


class DomainAliasForm(forms.Form):
    name = forms.CharField(max_length=253, label="Alias domain",
                           help_text="mail to user@alias-domain reaches user@this domain")

    def __init__(self, *args, domain: Domain, **kwargs):
        super().__init__(*args, **kwargs)
        self.domain = domain

    def clean_name(self) -> str:
        alias = DomainAlias(name=self.cleaned_data["name"], target=self.domain)
        try:
            alias.clean()
        except ValidationError as exc:
            raise ValidationError(exc.messages) from exc
        if DomainAlias.objects.filter(name=alias.name).exists():
            raise ValidationError(f"{alias.name} is already an alias domain")
        return alias.name


class AdminAssignForm(forms.Form):
    account = forms.CharField(max_length=254, help_text="an admin account name or a mail address")

    def clean_account(self) -> User:
        login = self.cleaned_data["account"].strip()
        if "@" in login:
            try:
                login = normalize_address(login)
            except AddressError as exc:
                raise ValidationError(str(exc)) from exc
        user = User.objects.filter(username=login).first()
        if user is None:
            raise ValidationError(f"no account {login!r}")
        return user


class DkimGenerateForm(forms.Form):
    algorithm = forms.ChoiceField(choices=DkimKey.Algorithm.choices, initial=DkimKey.Algorithm.RSA2048)


class DeleteConfirmForm(forms.Form):
    confirm = forms.CharField(label="Type the domain name to confirm")

    def __init__(self, *args, expected: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm(self) -> str:
        if self.cleaned_data["confirm"].strip().lower() != self.expected:
            raise ValidationError(f"type {self.expected} exactly to delete it")
        return self.cleaned_data["confirm"]


class _ZeroWhenEmpty(forms.IntegerField):
    """An optional number whose absence means 0 ("no limit"), so a form posted without it (an
    older page, a script) neither fails nor records a change."""

    def to_python(self, value):
        number = super().to_python(value)
        return 0 if number is None else number


class DomainLimitsForm(forms.ModelForm):
    default_quota = SizeField(help_text="what a new mailbox gets; 0 for no limit")
    max_quota = SizeField(help_text="the most a mailbox may have; 0 for no limit")
    send_limit_per_hour = _ZeroWhenEmpty(
        min_value=0, required=False, label="Recipients per hour",
        help_text="most recipients all the domain's mailboxes and credentials together may send to in any "
                  "hour; empty or 0 for no limit")

    class Meta:
        model = Domain
        fields = ["max_mailboxes", "max_aliases", "default_quota", "max_quota", "send_limit_per_hour"]
        help_texts = {"max_mailboxes": "0 for no limit", "max_aliases": "0 for no limit"}
