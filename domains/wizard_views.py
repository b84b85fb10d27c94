"""The DNS wizard: add the domain, prove ownership, publish the records, check them live.

Thin views: each looks the domain up through access.get_domain_for_user before anything else, so
another tenant's domain is a 404 on every URL and every method, and calls records / dns_checks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render

from .access import get_domain_for_user
from .dns_checks import COVERED_BY, record_checks, required_ok, verify_ownership
from .models import DnsCheck, Domain
from .records import expected_records, zone_file


def domain_view(*methods: str) -> Callable:
    """Login, then the tenant lookup (404), then the method check (405): in that order."""
    allowed = list(methods) + (["HEAD"] if "GET" in methods else [])

    def decorator(view: Callable[[HttpRequest, Domain], HttpResponse]) -> Callable:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, pk: int) -> HttpResponse:
            domain = get_domain_for_user(request.user, pk)
            if request.method not in allowed:
                return HttpResponseNotAllowed(allowed)
            return view(request, domain)

        return wrapper

    return decorator


@domain_view("GET")
def start(request: HttpRequest, domain: Domain) -> HttpResponse:
    return render(request, "domains/wizard/start.html", {"domain": domain, "step": 1})


@domain_view("GET")
def ownership(request: HttpRequest, domain: Domain) -> HttpResponse:
    record = next(r for r in expected_records(domain) if r.key == "ownership")
    return render(request, "domains/wizard/ownership.html", {"domain": domain, "record": record, "step": 2})


@domain_view("POST")
def verify(request: HttpRequest, domain: Domain) -> HttpResponse:
    result = verify_ownership(domain)
    if result.status == "ok":
        messages.success(request, f"Ownership of {domain.name} is verified.")
    else:
        messages.error(request, f"Not verified yet: found {result.found}. {result.hint}")
    return redirect("dnswizard:ownership", pk=domain.pk)


@domain_view("GET")
def records(request: HttpRequest, domain: Domain) -> HttpResponse:
    return render(request, "domains/wizard/records.html",
                  {"domain": domain, "records": expected_records(domain), "step": 3})


@domain_view("GET")
def zone(request: HttpRequest, domain: Domain) -> HttpResponse:
    response = HttpResponse(zone_file(domain), content_type="text/dns; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{domain.name}.zone"'
    return response


@domain_view("GET", "POST")
def check(request: HttpRequest, domain: Domain) -> HttpResponse:
    """GET shows the stored verdicts; POST ("check now") runs every check and stores the run."""
    if request.method == "POST":
        ok = required_ok(record_checks(domain))
        (messages.success if ok else messages.error)(
            request, "Every required record is right." if ok else "Some required records are wrong or missing.")
        return redirect("dnswizard:check", pk=domain.pk)
    rows = list(DnsCheck.objects.filter(domain=domain))
    checked = {row.key for row in rows}
    pending = [r for r in expected_records(domain) if r.key not in checked and r.key not in COVERED_BY]
    return render(request, "domains/wizard/check.html", {
        "domain": domain, "rows": rows, "pending": pending, "step": 4,
        "checked_at": max((row.checked_at for row in rows), default=None),
        "changed": [row for row in rows if row.changed],
    })
