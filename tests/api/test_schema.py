"""The OpenAPI 3 schema is valid and complete, and its docs page loads nothing from the internet."""

from __future__ import annotations

import re

from django.contrib.staticfiles import finders
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from api.urls import router


def schema() -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def openapi_path(pattern) -> str:
    """`^domains/(?P<pk>[^/.]+)/records/$` -> `/api/domains/{id}/records/` (drf-spectacular names pk `id`)."""
    route = pattern.pattern.regex.pattern.strip("^$")
    return "/api/" + re.sub(r"\(\?P<pk>[^)]+\)", "{id}", route)


def test_the_schema_is_valid_openapi_3(db):
    document = schema()
    assert document["openapi"].startswith("3.")
    validate(document)


def test_the_schema_lists_every_routed_endpoint_and_method(db):
    paths = schema()["paths"]
    for pattern in router.urls:
        actions = getattr(pattern.callback, "actions", None)
        if actions is None:
            continue  # the API root only lists the others
        path = openapi_path(pattern)
        assert path in paths, path
        assert set(paths[path]) == set(actions) - {"head"}, path


def test_the_schema_documents_bearer_tokens_and_the_one_time_secret(db):
    document = schema()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A token from `manage.py createapitoken ACCOUNT`."}
    create = document["paths"]["/api/relay-credentials/"]["post"]["responses"]["201"]
    ref = create["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "secret" in document["components"]["schemas"][ref]["properties"]
    listing = document["components"]["schemas"]["RelayCredential"]["properties"]
    assert "secret" not in listing and "secret_hash" not in listing


def test_the_docs_page_loads_its_scripts_from_this_server(db):
    html = APIClient().get("/api/docs/").content.decode()
    assert "mailhost API" in html or "/api/schema/" in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert not re.search(r"https?://", " ".join(sources))
    for source in sources:
        if source.startswith("/static/"):
            assert finders.find(source.removeprefix("/static/")), source


def test_drf_spectacular_generates_the_schema_without_a_warning(db, tmp_path):
    """A warning means a field or view whose type the schema had to guess: clients would get it wrong."""
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/relay-credentials/{id}/revoke/" in (tmp_path / "schema.yaml").read_text()
