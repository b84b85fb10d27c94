"""Who may open a portal page. Tenant scoping itself is domains.access: these only add roles.

Order matters for isolation: a view first finds the domain through `get_domain_for_user` (404
for another tenant's domain), and only then checks a role (403), so charlie never learns whether
an example.org object exists.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from domains.access import get_domain_for_user


def is_admin(user) -> bool:
    return user.is_authenticated and user.is_active and user.is_domain_admin


def admin_required(view):
    """Any admin (superadmin or domain admin); lists are then scoped by Domain.objects.for_user."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not is_admin(request.user):
            raise PermissionDenied("This page is for domain administrators.")
        return view(request, *args, **kwargs)

    return wrapper


def superadmin_required(view):
    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_superuser:
            raise PermissionDenied("This page is for the superadmin.")
        return view(request, *args, **kwargs)

    return wrapper


def domain_view(superadmin_only: bool = False):
    """Resolve the URL's `pk` to a Domain the user administers and pass it as `domain`."""

    def decorate(view):
        @login_required
        @wraps(view)
        def wrapper(request, pk, *args, **kwargs):
            domain = get_domain_for_user(request.user, pk)
            if superadmin_only and not request.user.is_superuser:
                raise PermissionDenied("Only the superadmin may do this.")
            return view(request, domain, *args, **kwargs)

        return wrapper

    return decorate


def mailbox_view(view):
    """Pages of a mailbox user about their own mailbox: no id in the URL, so nothing to guess."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        from mailboxes.models import Mailbox

        mailbox = get_object_or_404(Mailbox.objects.select_related("domain", "user"), user=request.user)
        return view(request, mailbox, *args, **kwargs)

    return wrapper


def not_post(request):
    """A 405 for anything but POST, used *after* the object lookup so that another tenant's
    object is a 404 whatever the method (require_POST would answer 405 before looking)."""
    from django.http import HttpResponseNotAllowed

    return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])
