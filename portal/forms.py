from django import forms


class LoginForm(forms.Form):
    username = forms.CharField(label="Mail address or admin account", max_length=254,
                               widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
                               strip=False)


class TokenForm(forms.Form):
    token = forms.RegexField(regex=r"^\s*\d{6}\s*$", label="6-digit code from your authenticator app",
                             error_messages={"invalid": "Enter the 6 digits your authenticator app shows."},
                             widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                                           "autofocus": True}))

    def clean_token(self) -> str:
        return self.cleaned_data["token"].strip()


class SearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200)


class SizeField(forms.CharField):
    """A byte count typed as `500M`, `2G` or plain bytes; `0` means no limit."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "e.g. 500M, 2G; 0 for no limit")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        from mailhost.sizes import format_size

        return format_size(value) if isinstance(value, int) and value else value

    def to_python(self, value):
        from mailhost.sizes import parse_size

        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return parse_size(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
