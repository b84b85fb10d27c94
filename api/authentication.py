"""`Authorization: Bearer <token>` for scripts; the portal's session (with CSRF) for browsers."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from .models import ApiToken


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        token = token.strip()
        if not token or " " in token:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer <token>'.")
        found = ApiToken.authenticate(token)
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        found.touch()
        return found.user, found

    def authenticate_header(self, request) -> str:
        # Naming a scheme here is what makes DRF answer 401 rather than 403 without credentials.
        return f'{self.keyword} realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular how the token is sent, so Swagger UI offers an 'Authorize' box for it."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A token from `manage.py createapitoken ACCOUNT`."}
