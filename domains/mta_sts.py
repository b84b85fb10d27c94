"""The MTA-STS policy (RFC 8461) every hosted domain publishes, served per Host header.

`mta-sts.<domain>` is a CNAME to the mail host, so this one view answers for every hosted
domain; the checker compares what it fetches with `policy_text()`, the one definition.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from .models import Domain

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_AGE = 604800  # one week, what the anchors publish (FIELD-NOTES)


def policy_text() -> str:
    # RFC 8461 3.2: lines end in CRLF; receivers accept LF too, but the RFC's form is the safe one.
    lines = ["version: STSv1", "mode: enforce", f"mx: {settings.MAIL_HOSTNAME}", f"max_age: {MAX_AGE}"]
    return "\r\n".join(lines) + "\r\n"


def policy_domain(host: str) -> Domain | None:
    """The active hosted domain whose policy host is `host` (port and trailing dot ignored)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.rstrip(".").lower()
    if not name.startswith("mta-sts."):
        return None
    return Domain.objects.filter(name=name.removeprefix("mta-sts."), active=True).first()


@require_safe
def policy_view(request: HttpRequest) -> HttpResponse:
    """No login, no CSRF: any sending MTA fetches this. Unknown hosts get 404 rather than a policy
    that could pin mail for a name we do not serve."""
    if policy_domain(request.get_host()) is None:
        raise Http404("no MTA-STS policy for this host")
    return HttpResponse(policy_text(), content_type="text/plain; charset=utf-8")
