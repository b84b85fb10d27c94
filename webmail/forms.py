from django import forms

from .sending import split_addresses


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, (list, tuple)):
            return [super(MultipleFileField, self).clean(d, initial) for d in data]
        return [super().clean(data, initial)] if data else []


def _addresses(value: str) -> list[str]:
    addresses = split_addresses(value)
    for addr in addresses:
        if "@" not in addr:
            raise forms.ValidationError(f"{addr!r} is not a mail address")
    return addresses


class ComposeForm(forms.Form):
    from_address = forms.ChoiceField(label="From")
    to = forms.CharField(max_length=4000)
    cc = forms.CharField(max_length=4000, required=False)
    bcc = forms.CharField(max_length=4000, required=False)
    subject = forms.CharField(max_length=998, required=False)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "cols": 80}), required=False)
    attachments = MultipleFileField(required=False)
    in_reply_to = forms.CharField(widget=forms.HiddenInput, required=False, max_length=998)
    references = forms.CharField(widget=forms.HiddenInput, required=False, max_length=8000)
    forward_of = forms.CharField(widget=forms.HiddenInput, required=False, max_length=400)

    def __init__(self, *args, senders: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["from_address"].choices = [(s, s) for s in senders]

    def clean_to(self):
        return _addresses(self.cleaned_data["to"])

    def clean_cc(self):
        return _addresses(self.cleaned_data["cc"])

    def clean_bcc(self):
        return _addresses(self.cleaned_data["bcc"])

    def clean_subject(self):
        return " ".join(self.cleaned_data["subject"].splitlines())
