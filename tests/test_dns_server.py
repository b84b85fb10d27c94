"""The loopback DNS server the DNS-dependent tests rely on answers like a real one."""

import dns.resolver
import pytest


def test_it_serves_published_records_and_nxdomain_elsewhere(dns_server):
    dns_server.zone("example.org", "@ IN MX 10 mail.example.org.", "mail IN A 127.0.0.1",
                    '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"')
    res = dns_server.resolver()
    assert [r.exchange.to_text() for r in res.resolve("example.org", "MX")] == ["mail.example.org."]
    assert res.resolve("example.org", "TXT")[0].strings == (b"v=spf1 ip4:127.0.0.1 -all",)
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("missing.example.org", "A")
    assert dns.resolver.resolve("mail.example.org", "A")[0].address == "127.0.0.1"
