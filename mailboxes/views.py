"""A domain admin's pages for mailboxes, aliases (with catch-all), relay credentials and CSV.

Every view receives its Domain from portal.roles.domain_view (domains.access underneath) and
looks objects up inside that domain only, so another tenant's ids are simply not found.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal import paging
from portal.audit import record
from portal.forms import SearchForm
from portal.roles import domain_view, not_post

from . import csv_io, provisioning
from .forms import (
    AliasEditForm,
    AliasForm,
    ImportForm,
    MailboxCreateForm,
    MailboxEditForm,
    NewPasswordForm,
    RelayCredentialForm,
)
from .models import RelayCredential


def _q(request) -> str:
    search = SearchForm(request.GET)
    return search.cleaned_data["q"].strip() if search.is_valid() else ""


@domain_view()
def mailbox_list(request, domain):
    q = _q(request)
    rows = domain.mailboxes.select_related("domain").order_by("local_part")
    if q:
        rows = rows.filter(Q(local_part__icontains=q) | Q(display_name__icontains=q))
    return render(request, "mailboxes/list.html", {"domain": domain, "page": paging.counted_page(rows, request),
                                                   "q": q})


@domain_view()
def mailbox_create(request, domain):
    form = MailboxCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            mailbox = provisioning.create_mailbox(f"{data['local_part']}@{domain.name}", data["password1"],
                                                  quota=data["quota"], display_name=data["display_name"])
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            record(request, "mailbox.create", mailbox, domain=domain)
            messages.success(request, f"{mailbox.address} is ready.")
            return redirect("mailboxes:list", pk=domain.pk)
    return render(request, "mailboxes/create.html", {"domain": domain, "form": form})


@domain_view()
def mailbox_edit(request, domain, mailbox_pk):
    mailbox = get_object_or_404(domain.mailboxes.select_related("user"), pk=mailbox_pk)
    form = MailboxEditForm(request.POST or None, instance=mailbox)
    if request.method == "POST" and form.is_valid():
        form.save()
        record(request, "mailbox.update", mailbox, domain=domain, detail=", ".join(form.changed_data))
        messages.success(request, f"{mailbox.address} is saved.")
        return redirect("mailboxes:edit", pk=domain.pk, mailbox_pk=mailbox.pk)
    return render(request, "mailboxes/edit.html", {"domain": domain, "mailbox": mailbox, "form": form,
                                                   "password_form": NewPasswordForm()})


@domain_view()
def mailbox_password(request, domain, mailbox_pk):
    mailbox = get_object_or_404(domain.mailboxes.select_related("user"), pk=mailbox_pk)
    if refused := not_post(request):
        return refused
    form = NewPasswordForm(request.POST, user=mailbox.user)
    if not form.is_valid():
        return render(request, "mailboxes/edit.html", {"domain": domain, "mailbox": mailbox,
                                                       "form": MailboxEditForm(instance=mailbox),
                                                       "password_form": form}, status=200)
    mailbox.user.set_password(form.cleaned_data["password1"])
    mailbox.user.save(update_fields=["password"])
    record(request, "mailbox.password_reset", mailbox, domain=domain)
    messages.success(request, f"The password of {mailbox.address} is changed.")
    return redirect("mailboxes:edit", pk=domain.pk, mailbox_pk=mailbox.pk)


@domain_view()
def mailbox_suspend(request, domain, mailbox_pk):
    mailbox = get_object_or_404(domain.mailboxes, pk=mailbox_pk)
    if refused := not_post(request):
        return refused
    mailbox.active = not mailbox.active
    mailbox.save(update_fields=["active"])
    record(request, "mailbox.resume" if mailbox.active else "mailbox.suspend", mailbox, domain=domain)
    messages.success(request, f"{mailbox.address} is {'active again' if mailbox.active else 'suspended'}.")
    return redirect("mailboxes:edit", pk=domain.pk, mailbox_pk=mailbox.pk)


@domain_view()
def mailbox_delete(request, domain, mailbox_pk):
    mailbox = get_object_or_404(domain.mailboxes.select_related("user"), pk=mailbox_pk)
    if request.method == "POST":
        record(request, "mailbox.delete", mailbox, domain=domain)
        provisioning.delete_mailbox(mailbox)
        messages.success(request, f"{mailbox.address} is deleted.")
        return redirect("mailboxes:list", pk=domain.pk)
    return render(request, "mailboxes/delete.html", {"domain": domain, "mailbox": mailbox})


@domain_view()
def alias_list(request, domain):
    q = _q(request)
    rows = domain.aliases.select_related("domain").order_by("local_part")
    if q:
        rows = rows.filter(Q(local_part__icontains=q) | Q(destinations__icontains=q))
    return render(request, "mailboxes/aliases.html", {"domain": domain, "page": paging.counted_page(rows, request),
                                                      "q": q})


@domain_view()
def alias_create(request, domain):
    form = AliasForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        local = form.cleaned_data["local_part"].strip()
        try:
            alias = provisioning.create_alias(f"{local}@{domain.name}", form.cleaned_data["destinations"])
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            record(request, "alias.create", alias, domain=domain)
            messages.success(request, f"{'The catch-all' if alias.is_catch_all else alias.address} is saved.")
            return redirect("mailboxes:aliases", pk=domain.pk)
    return render(request, "mailboxes/alias_form.html", {"domain": domain, "form": form})


@domain_view()
def alias_edit(request, domain, alias_pk):
    alias = get_object_or_404(domain.aliases, pk=alias_pk)
    form = AliasEditForm(request.POST or None, instance=alias)
    if request.method == "POST" and form.is_valid():
        form.save()
        record(request, "alias.update", alias, domain=domain)
        messages.success(request, "The alias is saved.")
        return redirect("mailboxes:aliases", pk=domain.pk)
    return render(request, "mailboxes/alias_form.html", {"domain": domain, "form": form, "alias": alias})


@domain_view()
def alias_delete(request, domain, alias_pk):
    alias = get_object_or_404(domain.aliases, pk=alias_pk)
    if refused := not_post(request):
        return refused
    record(request, "alias.delete", alias, domain=domain)
    alias.delete()
    messages.success(request, "The alias is deleted.")
    return redirect("mailboxes:aliases", pk=domain.pk)


@domain_view()
def relay_list(request, domain):
    form = RelayCredentialForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        try:
            cred, secret = RelayCredential.issue(domain=domain, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            record(request, "relay.issue", cred, domain=domain)
            form = RelayCredentialForm()
    creds = domain.relay_credentials.filter(mailbox__isnull=True).order_by("-created_at")
    return render(request, "mailboxes/relay.html", {"domain": domain, "form": form, "creds": creds,
                                                    "secret": secret, "new": secret and cred})


@domain_view()
def relay_revoke(request, domain, cred_pk):
    cred = get_object_or_404(domain.relay_credentials, pk=cred_pk, revoked_at__isnull=True)
    if refused := not_post(request):
        return refused
    cred.revoke()
    record(request, "relay.revoke", cred, domain=domain)
    messages.success(request, f"{cred.label} is revoked: it no longer logs in.")
    return redirect("mailboxes:relay", pk=domain.pk)


@domain_view()
def csv_import(request, domain):
    form = ImportForm(request.POST or None, request.FILES or None)
    results = None
    if request.method == "POST" and form.is_valid():
        importer = csv_io.import_mailboxes if form.cleaned_data["kind"] == "mailboxes" else csv_io.import_aliases
        try:
            results = importer(domain, form.text(), form.cleaned_data["first_line"] or 1)
        except ValidationError as exc:
            form.add_error("file", exc.messages)
        else:
            created = sum(r.ok for r in results)
            record(request, f"csv.import_{form.cleaned_data['kind']}", domain, detail=f"{created}/{len(results)} rows")
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"results": [r.as_dict() for r in results or []], "errors": form.errors},
                            status=200 if form.is_valid() else 400)
    return render(request, "mailboxes/import.html", {"domain": domain, "form": form, "results": results})


@domain_view()
def csv_export(request, domain, kind):
    rows = csv_io.export_mailboxes(domain) if kind == "mailboxes" else csv_io.export_aliases(domain)
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{domain.name}-{kind}.csv"'
    record(request, f"csv.export_{kind}", domain)
    return response
