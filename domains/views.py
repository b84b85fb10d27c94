"""Domain pages: the list, creation, suspension and deletion by the superadmin, admins,
alias domains and DKIM keys. Every lookup goes through domains.access (via portal.roles)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from mailboxes.models import Mailbox
from portal import paging
from portal.audit import record
from portal.forms import SearchForm
from portal.roles import admin_required, domain_view, not_post, superadmin_required

from . import dkim, dkim_rotation, provisioning
from .forms import (
    AdminAssignForm,
    DeleteConfirmForm,
    DkimGenerateForm,
    DomainAliasForm,
    DomainCreateForm,
    DomainLimitsForm,
)
from .models import Domain
from .records import expected_records


def _with_mailbox_counts(page):
    """One grouped query for the page's domains. (A correlated subquery in the SELECT list is
    evaluated by PostgreSQL for every row skipped by OFFSET too: 200 ms on page 20 of 1,000.)"""
    ids = [d.pk for d in page.object_list]
    counts = dict(Mailbox.objects.filter(domain_id__in=ids).order_by().values_list("domain_id")
                  .annotate(n=Count("pk")).values_list("domain_id", "n"))
    for domain in page.object_list:
        domain.mailbox_count = counts.get(domain.pk, 0)
    return page


@admin_required
def domain_list(request):
    domains = Domain.objects.for_user(request.user)
    search = SearchForm(request.GET)
    q = search.cleaned_data["q"].strip().lower() if search.is_valid() else ""
    if q:
        domains = domains.filter(name__contains=q)
    page = _with_mailbox_counts(paging.counted_page(domains, request))
    return render(request, "domains/list.html", {"page": page, "q": q})


@superadmin_required
def domain_create(request):
    form = DomainCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            domain = provisioning.create_domain(form.cleaned_data["name"], **form.fields_for_model())
        except ValidationError as exc:
            form.add_error("name", exc.messages)
        else:
            record(request, "domain.create", domain)
            messages.success(request, f"{domain.name} is added. Publish its DNS records next.")
            return redirect("domains:detail", pk=domain.pk)
    return render(request, "domains/create.html", {"form": form})


@domain_view()
def domain_detail(request, domain):
    context = {
        "domain": domain,
        "records": expected_records(domain),
        "admins": domain.admins.order_by("username"),
        "mailbox_count": domain.mailboxes.count(),
        "alias_count": domain.aliases.count(),
        "signing_key": domain.active_dkim_key(),
    }
    return render(request, "domains/detail.html", context)


@domain_view(superadmin_only=True)
@require_POST
def domain_suspend(request, domain):
    domain.active = not domain.active
    domain.save(update_fields=["active"])
    record(request, "domain.resume" if domain.active else "domain.suspend", domain)
    messages.success(request, f"{domain.name} is {'active again' if domain.active else 'suspended'}.")
    return redirect("domains:detail", pk=domain.pk)


@domain_view(superadmin_only=True)
def domain_limits(request, domain):
    form = DomainLimitsForm(request.POST or None, instance=domain)
    if request.method == "POST" and form.is_valid():
        form.save()
        record(request, "domain.limits", domain, detail=", ".join(form.changed_data))
        messages.success(request, f"The limits of {domain.name} are saved.")
        return redirect("domains:detail", pk=domain.pk)
    return render(request, "domains/limits.html", {"domain": domain, "form": form})


@domain_view(superadmin_only=True)
def domain_delete(request, domain):
    form = DeleteConfirmForm(request.POST or None, expected=domain.name)
    if request.method == "POST" and form.is_valid():
        record(request, "domain.delete", domain, detail=f"{domain.mailboxes.count()} mailboxes")
        provisioning.delete_domain(domain)
        messages.success(request, f"{domain.name} is deleted.")
        return redirect("domains:list")
    return render(request, "domains/delete.html", {"domain": domain, "form": form,
                                                   "mailbox_count": domain.mailboxes.count()})


@domain_view(superadmin_only=True)
def domain_admins(request, domain):
    form = AdminAssignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.cleaned_data["account"]
        domain.admins.add(user)
        record(request, "domain.admin_add", user, domain=domain)
        messages.success(request, f"{user.username} now administers {domain.name}.")
        return redirect("domains:admins", pk=domain.pk)
    return render(request, "domains/admins.html", {"domain": domain, "form": form,
                                                   "admins": domain.admins.order_by("username")})


@domain_view(superadmin_only=True)
def domain_admin_remove(request, domain, user_pk):
    user = get_object_or_404(domain.admins, pk=user_pk)
    if refused := not_post(request):
        return refused
    domain.admins.remove(user)
    record(request, "domain.admin_remove", user, domain=domain)
    messages.success(request, f"{user.username} no longer administers {domain.name}.")
    return redirect("domains:admins", pk=domain.pk)


@domain_view()
def alias_domains(request, domain):
    form = DomainAliasForm(request.POST or None, domain=domain)
    if request.method == "POST" and form.is_valid():
        alias = domain.alias_domains.create(name=form.cleaned_data["name"])
        record(request, "alias_domain.create", alias, domain=domain)
        messages.success(request, f"Mail to any address at {alias.name} now reaches {domain.name}.")
        return redirect("domains:alias_domains", pk=domain.pk)
    return render(request, "domains/alias_domains.html",
                  {"domain": domain, "form": form, "aliases": domain.alias_domains.all()})


@domain_view()
def alias_domain_delete(request, domain, alias_pk):
    alias = get_object_or_404(domain.alias_domains, pk=alias_pk)
    if refused := not_post(request):
        return refused
    record(request, "alias_domain.delete", alias, domain=domain)
    alias.delete()
    messages.success(request, f"{alias.name} is no longer an alias domain.")
    return redirect("domains:alias_domains", pk=domain.pk)


@domain_view()
def dkim_keys(request, domain):
    form = DkimGenerateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        key = dkim.create_key(domain, form.cleaned_data["algorithm"])
        record(request, "dkim.generate", key, domain=domain)
        messages.success(request, f"New key {key.selector} is pending: publish its TXT record, then activate it.")
        return redirect("domains:dkim", pk=domain.pk)
    keys = domain.dkim_keys.order_by("-created_at")
    return render(request, "domains/dkim.html", {"domain": domain, "form": form, "keys": keys,
                                                 "signing_key": domain.active_dkim_key()})


@domain_view()
def dkim_transition(request, domain, key_pk, action):
    key = get_object_or_404(domain.dkim_keys, pk=key_pk)
    if refused := not_post(request):
        return refused
    try:
        (dkim_rotation.activate if action == "activate" else dkim_rotation.retire)(key)
    except ValidationError as exc:
        messages.error(request, f"{key.selector}: {' '.join(exc.messages)}")
    else:
        record(request, f"dkim.{action}", key, domain=domain)
        messages.success(request, f"{key.selector} is {key.state}.")
    return redirect("domains:dkim", pk=domain.pk)
