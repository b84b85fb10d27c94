"""Error responses in the OpenAPI document: every operation says what its 4xx bodies look like.

drf-spectacular documents success responses only; clients (and schemathesis) need the error
shapes too, and they are the same everywhere, so one post-processing hook adds them.
"""

from __future__ import annotations

DETAIL_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "description": "What went wrong, in words.",
}
VALIDATION_ERROR = {
    "type": "object",
    "additionalProperties": {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    },
    "description": 'Messages by field: {"address": ["…"]}; messages about no field are under "detail".',
}


def _ref(name: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {}).update(
        {"ErrorDetail": DETAIL_ERROR, "ValidationErrors": VALIDATION_ERROR})
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            errors = {"401": "Missing, bad or revoked credentials.", "403": "Not allowed for this account."}
            if "{id}" in path:
                errors["404"] = "No such object among those this account may see."
            if method in ("post", "patch"):
                errors["415"] = "The body is not JSON."
            if method == "delete" and path.startswith("/api/domains/"):
                errors["409"] = "The domain still has mailboxes."
            for status, description in errors.items():
                responses.setdefault(status, {"description": description, **_ref("ErrorDetail")})
            if method in ("post", "patch") or operation.get("parameters"):
                responses.setdefault("400", {"description": "Invalid input.", **_ref("ValidationErrors")})
            responses.setdefault("405", {"description": "Method not allowed here.", **_ref("ErrorDetail")})
    return result
