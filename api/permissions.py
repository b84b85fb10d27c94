"""Who may do what through the API, on top of the tenant query (domains.access).

Visibility is decided by the querysets, which all start from Domain.objects.for_user(user): an
object outside them is a 404, whatever the method. This class adds the write rules:
- writing needs an account that administers a domain (or a superadmin); a mailbox user may only
  read (their own mailbox), and gets 403 for every write;
- a write to an object needs its domain to be administered by the account (a domain admin who
  also has a mailbox elsewhere cannot raise that mailbox's quota);
- actions a view lists in `superadmin_actions` (creating, deleting, suspending domains) need a
  superadmin; for object actions this is checked after the lookup, so another tenant's domain
  is still a 404, not a 403.
"""

from __future__ import annotations

from rest_framework import exceptions, permissions

from domains.models import Domain

ADMIN_ONLY = "Your account administers no domain: it may only read its own mailbox."
SUPERADMIN_ONLY = "Only a superadmin may do this."
NOT_YOUR_DOMAIN = "You do not administer this object's domain."


class TenantPermission(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            raise exceptions.NotAuthenticated()
        if request.method in permissions.SAFE_METHODS:
            return True
        if not user.is_domain_admin:
            raise exceptions.PermissionDenied(ADMIN_ONLY)
        if getattr(view, "action", None) in getattr(view, "superadmin_list_actions", ()):
            if not user.is_superuser:
                raise exceptions.PermissionDenied(SUPERADMIN_ONLY)
        return True

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        user = request.user
        if getattr(view, "action", None) in getattr(view, "superadmin_object_actions", ()):
            if not user.is_superuser:
                raise exceptions.PermissionDenied(SUPERADMIN_ONLY)
        domain_id = view.owning_domain_id(obj)
        if not Domain.objects.for_user(user).filter(pk=domain_id).exists():
            raise exceptions.PermissionDenied(NOT_YOUR_DOMAIN)
        return True
