"""Every error the API returns is JSON: validation, 401/403/404/405/415, conflicts, and 500.

Django's ValidationError (raised by provisioning functions and model full_clean) becomes a 400
shaped like DRF's own: {"field": ["message", ...]}, with messages that belong to no field under
"detail". A bug becomes {"detail": "Internal server error."} and a logged traceback, never an
HTML page, whatever DEBUG says: API clients parse the body.
"""

from __future__ import annotations

import logging

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

log = logging.getLogger(__name__)

DETAIL = "detail"


def api_validation_error(exc: DjangoValidationError, *, rename: dict[str, str] | None = None,
                         default: str = DETAIL) -> exceptions.ValidationError:
    """Map a Django ValidationError onto API fields; `rename` maps model fields to API fields,
    messages without a field go to `default`."""
    rename = rename or {}
    errors: dict[str, list[str]] = {}
    if hasattr(exc, "error_dict"):
        for field, field_errors in exc.message_dict.items():
            key = default if field == NON_FIELD_ERRORS else rename.get(field, field)
            errors.setdefault(key, []).extend(field_errors)
    else:
        errors[default] = list(exc.messages)
    return exceptions.ValidationError(errors)


def _flat_messages(value, prefix: str = "") -> list[str] | str:
    """Errors of list items and nested objects come from DRF as dicts keyed by index or field;
    the schema promises a list of strings per field, so name the item in the message instead."""
    if isinstance(value, str):
        return value
    out: list[str] = []
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for key, item in items:
        label = f"{prefix}item {key}: " if isinstance(key, int) or str(key).isdigit() else (
            f"{prefix}{key}: " if key is not None else prefix)
        flat = _flat_messages(item, label) if not isinstance(item, str) else label + item
        out.extend([flat] if isinstance(flat, str) else flat)
    return out


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()  # the same words for every kind of object: nothing to learn from them
    elif isinstance(exc, DjangoValidationError):
        exc = api_validation_error(exc)
    elif isinstance(exc, ProtectedError):
        names = sorted({str(obj) for obj in list(exc.protected_objects)[:5]})
        set_rollback()
        return Response({DETAIL: f"Still in use by: {', '.join(names)}; remove those first."},
                        status=status.HTTP_409_CONFLICT)
    response = drf_exception_handler(exc, context)
    if response is not None:
        if isinstance(exc, exceptions.ValidationError) and isinstance(response.data, dict):
            response.data = {key: _flat_messages(value) for key, value in response.data.items()}
        return response
    set_rollback()
    view = context.get("view")
    log.exception("API error in %s", type(view).__name__ if view else "?", exc_info=exc)
    return Response({DETAIL: "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def not_found(request, *args, **kwargs) -> JsonResponse:
    """Unknown paths under /api/ answer in JSON like every other API error. This catch-all also
    stops APPEND_SLASH from redirecting (which loses a POST body), so name the right path instead."""
    detail = "Not found."
    if not request.path_info.endswith("/"):
        try:
            match = resolve(request.path_info + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            detail = f"Not found. Did you mean {request.path}/ (with the trailing slash)?"
    return JsonResponse({DETAIL: detail}, status=404)
