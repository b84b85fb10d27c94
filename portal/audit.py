"""Recording admin actions: every portal view that changes something calls `record` once."""

from __future__ import annotations

from django.http import HttpRequest

from domains.models import Domain

from .models import AuditLog


def client_ip(request: HttpRequest) -> str | None:
    """The peer address as the server saw it; proxy headers are not trusted (they are forgeable)."""
    return request.META.get("REMOTE_ADDR") or None


def record(request: HttpRequest, action: str, obj=None, *, domain: Domain | None = None,
           detail: str = "") -> AuditLog:
    if domain is None and isinstance(obj, Domain):
        domain = obj
    user = request.user if request.user.is_authenticated else None
    return AuditLog.objects.create(
        actor=user,
        actor_name=user.get_username() if user else "",
        action=action,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=str(getattr(obj, "pk", "") or ""),
        object_repr=str(obj)[:300] if obj is not None else "",
        domain=domain,
        domain_name=domain.name if domain else "",
        ip=client_ip(request),
        detail=detail,
    )
