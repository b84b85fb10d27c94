"""A mailbox user's own pages. The mailbox comes from the logged-in account, never from the URL."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render

from delivery.models import MessageLog
from portal import paging
from portal.audit import record
from portal.forms import SearchForm
from portal.roles import mailbox_view, not_post

from .forms import AppPasswordForm, AutoreplyForm, ForwardingForm
from .models import RelayCredential


@mailbox_view
def overview(request, mailbox):
    percent = min(100, round(100 * mailbox.used_bytes / mailbox.quota)) if mailbox.quota else None
    return render(request, "me/overview.html", {"mailbox": mailbox, "percent": percent})


@mailbox_view
def change_password(request, mailbox):
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        update_session_auth_hash(request, form.user)
        record(request, "me.password_change", mailbox, domain=mailbox.domain)
        messages.success(request, "Your password is changed. Update it in your mail apps too.")
        return redirect("me:overview")
    return render(request, "me/form.html", {"form": form, "title": "Change password", "button": "Change password"})


@mailbox_view
def forwarding(request, mailbox):
    form = ForwardingForm(request.POST or None, instance=mailbox)
    if request.method == "POST" and form.is_valid():
        form.save()
        record(request, "me.forwarding", mailbox, domain=mailbox.domain, detail=", ".join(mailbox.forward_to))
        messages.success(request, "Forwarding is saved." if mailbox.forward_to else "Forwarding is off.")
        return redirect("me:overview")
    return render(request, "me/form.html", {"form": form, "title": "Forwarding", "button": "Save"})


@mailbox_view
def autoreply(request, mailbox):
    form = AutoreplyForm(request.POST or None, instance=mailbox)
    if request.method == "POST" and form.is_valid():
        form.save()
        record(request, "me.autoreply", mailbox, domain=mailbox.domain)
        messages.success(request, "The automatic reply is " + ("on." if mailbox.autoreply_enabled else "off."))
        return redirect("me:overview")
    return render(request, "me/form.html", {"form": form, "title": "Automatic reply", "button": "Save"})


@mailbox_view
def app_passwords(request, mailbox):
    form = AppPasswordForm(request.POST or None)
    secret = new = None
    if request.method == "POST" and form.is_valid():
        try:
            new, secret = RelayCredential.issue(domain=mailbox.domain, mailbox=mailbox,
                                                label=form.cleaned_data["label"])
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            record(request, "me.app_password", new, domain=mailbox.domain)
            form = AppPasswordForm()
    creds = mailbox.app_passwords.order_by("-created_at")
    return render(request, "me/app_passwords.html", {"mailbox": mailbox, "form": form, "creds": creds,
                                                     "secret": secret, "new": new})


@mailbox_view
def app_password_revoke(request, mailbox, cred_pk):
    cred = get_object_or_404(mailbox.app_passwords, pk=cred_pk, revoked_at__isnull=True)
    if refused := not_post(request):
        return refused
    cred.revoke()
    record(request, "me.app_password_revoke", cred, domain=mailbox.domain)
    messages.success(request, f"{cred.label} is revoked.")
    return redirect("me:app_passwords")


@mailbox_view
def message_log(request, mailbox):
    rows = MessageLog.objects.filter(domain=mailbox.domain).filter(MessageLog.involving(mailbox.address))
    search = SearchForm(request.GET)
    q = search.cleaned_data["q"].strip() if search.is_valid() else ""
    if q:
        rows = rows.filter(MessageLog.matching(q))
    return render(request, "me/log.html", {"mailbox": mailbox, "page": paging.window(rows, request), "q": q})
