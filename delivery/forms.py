"""Forms of the delivery pages: a domain's webhooks."""

from __future__ import annotations

from django import forms

from . import webhooks
from .models import Webhook


class WebhookForm(forms.Form):
    url = forms.URLField(max_length=500, label="Endpoint URL", assume_scheme="https",
                         help_text="https:// only; it gets a signed POST for each outcome chosen below")
    events = forms.MultipleChoiceField(choices=Webhook.Event.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=[Webhook.Event.DELIVERED, Webhook.Event.BOUNCED],
                                       help_text="which delivery outcomes of this domain's mail are sent")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if problem := webhooks.url_problem(url):
            raise forms.ValidationError(problem)
        return url
