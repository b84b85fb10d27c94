"""Schemathesis drives the live API from its own schema: no 500s, and answers match the schema.

Bounded to a few examples per operation (the suite runs twice in CI) and to 127.0.0.1.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.models import ApiToken
from mailboxes.provisioning import create_alias, create_mailbox
from tests.support import PASSWORD

EXAMPLES = 5
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.slow
def test_the_live_api_keeps_to_its_schema(live_server, transactional_db, superadmin, example_org):
    create_mailbox("bob@example.org", PASSWORD)
    create_alias("@example.org", ["bob@example.org"])
    _, token = ApiToken.issue(superadmin)
    assert live_server.url.startswith("http://localhost:") or live_server.url.startswith("http://127.0.0.1:")
    base_url = live_server.url.replace("localhost", "127.0.0.1")
    session = requests.Session()
    session.trust_env = False  # never a proxy from the environment: the server is on loopback
    try:
        calls = exercise_every_operation(session, base_url, token)
    finally:
        session.close()  # a kept-alive socket would pin the server thread's database connection
    assert {200, 400, 404} <= set(calls), calls  # it reached real objects, validation and lookups


def exercise_every_operation(session: requests.Session, base_url: str, token: str) -> list[int]:
    document = session.get(f"{base_url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures = []
    calls = []
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def exercise(case):
            response = case.call(base_url=base_url, session=session, headers={"Authorization": f"Bearer {token}"})
            calls.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        try:
            exercise()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    return calls
