from django import forms
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from mailhost.addresses import AddressError, normalize_address
from portal.forms import SizeField

from .models import Alias, Mailbox


def _address_lines(text: str) -> list[str]:
    """Addresses typed one per line (or separated by commas, semicolons or spaces), normalised."""
    out = []
    for item in text.replace(",", " ").replace(";", " ").split():
        try:
            out.append(normalize_address(item))
        except AddressError as exc:
            raise ValidationError(f"{item}: {exc}") from exc
    return list(dict.fromkeys(out))


class AddressListField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return _address_lines(super().to_python(value) or "")


class NewPasswordForm(forms.Form):
    password1 = forms.CharField(label="New password", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    password2 = forms.CharField(label="Repeat it", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        data = super().clean()
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        elif data.get("password1"):
            try:
                validate_password(data["password1"], self.user)
            except ValidationError as exc:
                self.add_error("password1", exc)
        return data


class MailboxCreateForm(NewPasswordForm):
    local_part = forms.CharField(max_length=64, label="Address (before the @)")
    display_name = forms.CharField(max_length=200, required=False)
    quota = SizeField(required=False, help_text="empty: the domain's default; e.g. 500M, 2G")
    field_order = ["local_part", "display_name", "quota", "password1", "password2"]


class MailboxEditForm(forms.ModelForm):
    quota = SizeField()
    forward_to = AddressListField(required=False, help_text="one address per line; empty: no forwarding")

    class Meta:
        model = Mailbox
        fields = ["display_name", "quota", "forward_to", "forward_keep_copy", "send_limit_per_hour"]
        labels = {"send_limit_per_hour": "Recipients per hour"}
        help_texts = {"send_limit_per_hour": "most recipients it may send to in any hour, over its password and "
                                             "app passwords (a message to three people counts three); empty: no limit"}


class ForwardingForm(forms.ModelForm):
    forward_to = AddressListField(required=False, label="Forward my mail to",
                                  help_text="one address per line; empty: no forwarding")

    class Meta:
        model = Mailbox
        fields = ["forward_to", "forward_keep_copy"]
        labels = {"forward_keep_copy": "Keep a copy in this mailbox"}


class AutoreplyForm(forms.ModelForm):
    class Meta:
        model = Mailbox
        fields = ["autoreply_enabled", "autoreply_subject", "autoreply_body", "autoreply_start", "autoreply_end",
                  "autoreply_interval_days"]
        labels = {"autoreply_enabled": "Send an automatic reply", "autoreply_subject": "Subject",
                  "autoreply_body": "Message", "autoreply_start": "From (optional)",
                  "autoreply_end": "Until (optional)", "autoreply_interval_days": "Reply to one sender at most every"}
        help_texts = {"autoreply_interval_days": "days", "autoreply_start": "YYYY-MM-DD HH:MM, UTC"}
        widgets = {"autoreply_body": forms.Textarea(attrs={"rows": 5})}

    def clean(self):
        data = super().clean()
        if data.get("autoreply_enabled") and not (data.get("autoreply_body") or "").strip():
            self.add_error("autoreply_body", "Write the message to send.")
        start, end = data.get("autoreply_start"), data.get("autoreply_end")
        if start and end and end <= start:
            self.add_error("autoreply_end", "The end must come after the start.")
        return data


class AliasForm(forms.Form):
    local_part = forms.CharField(max_length=64, required=False, label="Address (before the @)",
                                 help_text="leave empty for the catch-all: every unknown address of the domain")
    destinations = AddressListField(help_text="one address per line; local mailboxes or remote addresses")


class AliasEditForm(forms.ModelForm):
    destinations = AddressListField(help_text="one address per line")

    class Meta:
        model = Alias
        fields = ["destinations", "active"]


class RelayCredentialForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="what uses it, e.g. 'web shop' or 'printer'")
    allowed_senders = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="addresses it may send as, or @domain for any address of a domain; one per line")
    rate_limit_per_hour = forms.IntegerField(
        min_value=1, required=False, label="Recipients per hour",
        help_text="most recipients it may send to in any hour (a message to three people counts three); "
                  "empty: no limit")

    def clean_allowed_senders(self) -> list[str]:
        return self.cleaned_data["allowed_senders"].split()


class AppPasswordForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="the device or app, e.g. 'phone'")


class ImportForm(forms.Form):
    kind = forms.ChoiceField(choices=[("mailboxes", "Mailboxes"), ("aliases", "Aliases")])
    file = forms.FileField(label="CSV file", required=False)
    chunk = forms.CharField(required=False, widget=forms.HiddenInput)
    first_line = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        if not data.get("file") and not data.get("chunk"):
            raise ValidationError("Choose a CSV file to import.")
        return data

    def text(self) -> str:
        if self.cleaned_data.get("chunk"):
            return self.cleaned_data["chunk"]
        raw = self.cleaned_data["file"].read()
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError("The file is not UTF-8 text; save it as CSV UTF-8.") from exc

