"""Login, logout, the dashboard by role, TOTP set-up and the audit log."""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from delivery.models import QueuedRecipient
from domains.models import Domain
from mailboxes.models import Mailbox, User

from . import login as login_flow
from . import paging
from .audit import record
from .forms import LoginForm, SearchForm, TokenForm
from .models import AuditLog
from .roles import admin_required


def _next_url(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/"
    return target if url_has_allowed_host_and_scheme(target, {request.get_host()}) else "/"


def login_view(request):
    form = LoginForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        outcome, value = login_flow.attempt(request, form.cleaned_data["username"], form.cleaned_data["password"])
        if outcome == "ok":
            return redirect(_next_url(request))
        if outcome == "otp":
            return redirect(f"{reverse('portal:login_verify')}?{urlencode({'next': _next_url(request)})}")
        form.add_error(None, value)
        status = 429 if outcome == "blocked" else 200
    return render(request, "portal/login.html", {"form": form, "next": _next_url(request)}, status=status)


def login_verify(request):
    pending = request.session.get(login_flow.PENDING_KEY)
    if pending is None:
        return redirect("portal:login")
    user = get_object_or_404(User, pk=pending, is_active=True)
    form = TokenForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        outcome, message = login_flow.verify(request, user, form.cleaned_data["token"])
        if outcome == "ok":
            return redirect(_next_url(request))
        form.add_error("token", message)
        status = 429 if outcome == "blocked" else 200
    return render(request, "portal/login_verify.html", {"form": form, "next": _next_url(request)}, status=status)


@require_POST
def logout_view(request):
    logout(request)
    messages.info(request, "You are logged out.")
    return redirect("portal:login")


@login_required
def dashboard(request):
    user = request.user
    if not user.is_domain_admin:
        return redirect("me:overview") if Mailbox.objects.filter(user=user).exists() else render(
            request, "portal/no_role.html")
    domains = Domain.objects.for_user(user)
    mailboxes = Mailbox.objects.all()
    pending = QueuedRecipient.objects.filter(state__in=QueuedRecipient.PENDING_STATES)
    if not user.is_superuser:  # the superadmin's counts need no join through the domain table
        mailboxes, pending = mailboxes.filter(domain__in=domains), pending.filter(message__sender_domain__in=domains)
    context = {
        "domains": domains[:20],
        "domain_count": domains.count(),
        "mailbox_count": mailboxes.count(),
        "pending_count": pending.count(),
        "has_2fa": login_flow.confirmed_device(user) is not None,
    }
    return render(request, "portal/dashboard.html", context)


def _qr_svg(text: str) -> str:
    out = io.BytesIO()
    qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8).save(out)
    return out.getvalue().decode()


@admin_required
def otp_setup(request):
    if login_flow.confirmed_device(request.user):
        return render(request, "portal/otp_enabled.html", {"form": TokenForm()})
    device = TOTPDevice.objects.filter(user=request.user, confirmed=False).first() or TOTPDevice.objects.create(
        user=request.user, name="portal", confirmed=False)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["token"]):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            record(request, "2fa.enable", request.user)
            messages.success(request, "Two-factor authentication is on: your next login asks for a code.")
            return redirect("portal:dashboard")
        form.add_error("token", "That code does not match; check the time on your phone and try again.")
    context = {"form": form, "qr": _qr_svg(device.config_url), "secret": device.config_url.split("secret=")[1]
               .split("&")[0]}
    return render(request, "portal/otp_setup.html", context)


@admin_required
@require_POST
def otp_disable(request):
    device = login_flow.confirmed_device(request.user)
    form = TokenForm(request.POST)
    if device is None or not form.is_valid() or not device.verify_token(form.cleaned_data["token"]):
        messages.error(request, "Two-factor authentication stays on: the code was not right.")
        return redirect("portal:otp_setup")
    TOTPDevice.objects.filter(user=request.user).delete()
    record(request, "2fa.disable", request.user)
    messages.success(request, "Two-factor authentication is off.")
    return redirect("portal:dashboard")


@admin_required
def audit_log(request):
    rows = AuditLog.objects.all()
    if not request.user.is_superuser:
        rows = rows.filter(domain__in=Domain.objects.for_user(request.user))
    search = SearchForm(request.GET)
    q = search.cleaned_data["q"] if search.is_valid() else ""
    if q:
        rows = rows.filter(Q(actor_name__icontains=q) | Q(action__icontains=q) | Q(object_repr__icontains=q)
                           | Q(domain_name__icontains=q) | Q(ip__startswith=q))
    return render(request, "portal/audit.html", {"page": paging.window(rows, request), "q": q})
