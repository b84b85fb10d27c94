"""Routing through real DNS (nsd on loopback, queried by dnspython from settings.DNS_RESOLVERS)."""

from __future__ import annotations

import pytest

from delivery import routing
from delivery.models import QueuedRecipient
from delivery.queue import enqueue
from tests.delivery.test_outbound_delivery import MESSAGE, run_queue


def test_mx_hosts_come_in_preference_order(dns_server, settings):
    dns_server.zone("remote.test", "@ IN MX 20 backup.remote.test.", "@ IN MX 10 primary.remote.test.",
                    "primary IN A 127.0.0.2", "backup IN A 127.0.0.3", "backup IN AAAA ::1")
    hosts = routing.mx_hosts("remote.test")
    assert [h.name for h in hosts] == ["primary.remote.test", "backup.remote.test"]
    assert hosts[1].addresses == ("127.0.0.3", "::1")
    assert {h.port for h in hosts} == {settings.SMTP_OUTBOUND_PORT}


def test_a_domain_without_mx_is_its_own_implicit_mx(dns_server):
    dns_server.zone("remote.test", "@ IN A 127.0.0.2")
    [host] = routing.mx_hosts("remote.test")
    assert host.name == "remote.test" and host.addresses == ("127.0.0.2",)


def test_a_null_mx_is_a_permanent_refusal(dns_server):
    dns_server.zone("remote.test", "@ IN MX 0 .", "@ IN A 127.0.0.2")
    with pytest.raises(routing.PermanentRoutingError) as caught:
        routing.mx_hosts("remote.test")
    assert caught.value.status == "5.1.10"


def test_a_domain_that_does_not_exist_is_a_permanent_refusal(dns_server):
    dns_server.zone("remote.test", "@ IN A 127.0.0.2")
    with pytest.raises(routing.PermanentRoutingError):
        routing.mx_hosts("nope.remote.test")


def test_a_server_failure_is_temporary(dns_server):
    # nsd serves no such zone and refuses: dnspython reports NoNameservers, i.e. SERVFAIL-like.
    with pytest.raises(routing.TemporaryRoutingError):
        routing.mx_hosts("unserved.test")


def test_a_relay_host_takes_all_mail_without_looking_at_mx(settings):
    settings.SMTP_RELAY_HOST = ("127.0.0.5", 2525)
    [host] = routing.mx_hosts("anything.test")
    assert (host.name, host.addresses, host.port) == ("127.0.0.5", ("127.0.0.5",), 2525)


def test_null_mx_bounces_at_once_and_dns_failure_defers(bob, dns_server):
    dns_server.zone("remote.test", "@ IN MX 0 .")
    message = enqueue("bob@example.org", ["a@remote.test", "b@unserved.test"], MESSAGE)
    run_queue()
    states = {r.address: (r.state, r.last_reply[:10]) for r in message.recipients.all()}
    assert states == {"a@remote.test": (QueuedRecipient.State.BOUNCED, "550 5.1.10"),
                      "b@unserved.test": (QueuedRecipient.State.DEFERRED, "451 4.4.3 ")}
