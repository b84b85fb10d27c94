"""Client self-configuration documents: Thunderbird, Outlook, Apple; hosted domains only."""

from __future__ import annotations

import plistlib
from xml.etree import ElementTree as ET

from webmail.clientsetup import OUTLOOK_NS, REQUEST_NS


def autodiscover_body(address: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQUEST_NS}"><Request>'
            f"<EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>{OUTLOOK_NS}"
            "</AcceptableResponseSchema></Request></Autodiscover>").encode()


def test_thunderbird_autoconfig_names_the_mail_host_and_tls_ports(client, bob):
    response = client.get("/mail/config-v1.1.xml", {"emailaddress": "Bob@Example.org"})
    assert response.status_code == 200 and response["Content-Type"] == "application/xml"
    provider = ET.fromstring(response.content).find("emailProvider")
    assert provider.get("id") == "example.org" and provider.findtext("domain") == "example.org"
    servers = {(s.get("type"), s.findtext("port"), s.findtext("socketType")): s
               for s in provider.iter() if s.tag in ("incomingServer", "outgoingServer")}
    assert set(servers) == {("imap", "993", "SSL"), ("pop3", "995", "SSL"), ("smtp", "465", "SSL"),
                            ("smtp", "587", "STARTTLS")}
    for server in servers.values():
        assert server.findtext("hostname") == "mail.mailhost.test"
        assert server.findtext("username") == "%EMAILADDRESS%"


def test_thunderbird_autoconfig_also_answers_by_autoconfig_host_name(client, example_org, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "autoconfig.example.org", "example.org", "gmail.com"]
    response = client.get("/mail/config-v1.1.xml", HTTP_HOST="autoconfig.example.org")
    assert ET.fromstring(response.content).find("emailProvider").get("id") == "example.org"
    response = client.get("/.well-known/autoconfig/mail/config-v1.1.xml", HTTP_HOST="example.org")
    assert ET.fromstring(response.content).find("emailProvider").get("id") == "example.org"
    assert client.get("/.well-known/autoconfig/mail/config-v1.1.xml", HTTP_HOST="gmail.com").status_code == 404


def test_autoconfig_is_404_for_domains_not_hosted_here(client, example_org):
    assert client.get("/mail/config-v1.1.xml", {"emailaddress": "a@gmail.com"}).status_code == 404
    assert client.get("/mail/config-v1.1.xml", {"emailaddress": "not an address"}).status_code == 404
    example_org.active = False
    example_org.save()
    assert client.get("/mail/config-v1.1.xml", {"emailaddress": "bob@example.org"}).status_code == 404


def test_outlook_autodiscover_answers_a_post_with_imap_pop3_and_smtp(client, bob):
    response = client.post("/autodiscover/autodiscover.xml", autodiscover_body("bob@example.org"),
                           content_type="text/xml")
    assert response.status_code == 200
    account = ET.fromstring(response.content).find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    protocols = {p.findtext(f"{{{OUTLOOK_NS}}}Type"): p for p in account.findall(f"{{{OUTLOOK_NS}}}Protocol")}
    assert {k: p.findtext(f"{{{OUTLOOK_NS}}}Port") for k, p in protocols.items()} == {
        "IMAP": "993", "POP3": "995", "SMTP": "465"}
    for p in protocols.values():
        assert p.findtext(f"{{{OUTLOOK_NS}}}Server") == "mail.mailhost.test"
        assert p.findtext(f"{{{OUTLOOK_NS}}}LoginName") == "bob@example.org"
        assert p.findtext(f"{{{OUTLOOK_NS}}}SSL") == "on"
    assert client.post("/Autodiscover/Autodiscover.xml", autodiscover_body("bob@example.org"),
                       content_type="text/xml").status_code == 200


def test_outlook_autodiscover_refuses_other_domains_bad_xml_and_entities(client, bob):
    post = lambda body: client.post("/autodiscover/autodiscover.xml", body, content_type="text/xml")  # noqa: E731
    assert post(autodiscover_body("someone@other.example")).status_code == 404
    assert post(b"<not xml").status_code == 404
    bomb = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaa">]>'
            b"<Autodiscover><EMailAddress>&a;</EMailAddress></Autodiscover>")
    assert post(bomb).status_code == 404
    assert client.get("/autodiscover/autodiscover.xml").status_code == 405


def test_the_apple_profile_configures_the_logged_in_mailbox(client, bob, charlie):
    assert client.get("/webmail/apple.mobileconfig").status_code == 302
    client.force_login(bob.user)
    response = client.get("/webmail/apple.mobileconfig")
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert "attachment" in response["Content-Disposition"]
    profile = plistlib.loads(response.content)
    assert profile["PayloadType"] == "Configuration"
    [account] = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAddress"] == account["IncomingMailServerUsername"] == "bob@example.org"
    host = "mail.mailhost.test"
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"]) == (host, 993)
    assert (account["OutgoingMailServerHostName"], account["OutgoingMailServerPortNumber"]) == (host, 465)
    assert account["IncomingMailServerUseSSL"] and account["OutgoingMailServerUseSSL"]
    client.force_login(charlie)
    assert client.get("/webmail/apple.mobileconfig").status_code == 404
