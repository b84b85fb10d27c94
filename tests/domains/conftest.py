"""Fixtures of the DNS wizard's tests (nsd zones for the checker, a local MTA-STS HTTPS server)."""

from tests.domains.dns_fixtures import checker_dns, policy_server  # noqa: F401
