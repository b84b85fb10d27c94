"""/.well-known/mta-sts.txt answers per Host header: the policy for mta-sts.<hosted domain>, else 404."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def hosts(settings):
    settings.ALLOWED_HOSTS = [".example.org", ".other.test", ".unknown.test", "testserver"]


def test_it_serves_the_enforce_policy_for_a_hosted_domain(example_org):
    response = Client().get("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.example.org")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().splitlines() == [
        "version: STSv1", "mode: enforce", "mx: mail.mailhost.test", "max_age: 604800"]


def test_the_host_is_matched_without_port_or_case(example_org):
    response = Client().get("/.well-known/mta-sts.txt", HTTP_HOST="MTA-STS.Example.org:8443")
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["mta-sts.unknown.test", "example.org", "www.example.org", "testserver"])
def test_an_unknown_host_gets_404(example_org, host):
    assert Client().get("/.well-known/mta-sts.txt", HTTP_HOST=host).status_code == 404


def test_a_suspended_domain_publishes_no_policy(other_test):
    other_test.active = False
    other_test.save()
    assert Client().get("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.other.test").status_code == 404


def test_it_only_answers_get_and_head(example_org):
    client = Client()
    assert client.head("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.example.org").status_code == 200
    assert client.post("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.example.org").status_code == 405
