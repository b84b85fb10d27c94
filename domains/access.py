"""Tenant access: the one query every view and API endpoint goes through.

A superadmin sees every domain; a domain admin sees the domains they administer; anyone else
sees none. Objects of other tenants are then simply not found (404), never "forbidden".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.shortcuts import get_object_or_404

if TYPE_CHECKING:
    from .models import Domain


class DomainQuerySet(models.QuerySet):
    def for_user(self, user) -> DomainQuerySet:
        if not getattr(user, "is_authenticated", False) or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(admins=user)


def get_domain_for_user(user, pk) -> Domain:
    from .models import Domain

    return get_object_or_404(Domain.objects.for_user(user), pk=pk)
