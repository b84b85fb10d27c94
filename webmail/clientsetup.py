"""Mail client self-configuration: Thunderbird autoconfig, Outlook autodiscover, Apple profiles.

Every document names MAIL_HOSTNAME with the implicit-TLS ports clients prefer (IMAP 993,
POP3 995, SMTP 465) and submission with STARTTLS on 587, the full address as the user name, and is
only given for hosted domains, so the server does not confirm guesses about other domains.
"""

from __future__ import annotations

import plistlib
import uuid
from xml.etree import ElementTree as ET

from django.conf import settings

from domains.models import Domain
from mailboxes.directory import hosted_domain_for
from mailhost.addresses import AddressError, display_domain, parse_address

IMAPS, POP3S, SMTPS, SUBMISSION = 993, 995, 465, 587
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MAX_AUTODISCOVER_BODY = 16 * 1024


def hosted(address: str) -> tuple[str, Domain] | None:
    """(normalised address, domain) when the address is in a hosted, active domain."""
    try:
        addr = parse_address(address, allow_subaddress=False)
    except AddressError:
        return None
    domain = hosted_domain_for(addr.domain)
    if domain is None or not domain.active:
        return None
    return str(addr), domain


def thunderbird(domain_name: str) -> bytes:
    host = settings.MAIL_HOSTNAME
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain_name)
    ET.SubElement(provider, "domain").text = domain_name
    ET.SubElement(provider, "displayName").text = display_domain(domain_name)
    ET.SubElement(provider, "displayShortName").text = display_domain(domain_name)
    for kind, tag, port, socket_type in (("imap", "incomingServer", IMAPS, "SSL"),
                                         ("pop3", "incomingServer", POP3S, "SSL"),
                                         ("smtp", "outgoingServer", SMTPS, "SSL"),
                                         ("smtp", "outgoingServer", SUBMISSION, "STARTTLS")):
        server = ET.SubElement(provider, tag, type=kind)
        ET.SubElement(server, "hostname").text = host
        ET.SubElement(server, "port").text = str(port)
        ET.SubElement(server, "socketType").text = socket_type
        ET.SubElement(server, "authentication").text = "password-cleartext"
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def autodiscover_request_address(body: bytes) -> str | None:
    """The EMailAddress of an Outlook autodiscover request, None when the body is not one.

    ElementTree never fetches external entities and the body size is capped, so a hostile XML
    body costs nothing.
    """
    if len(body) > MAX_AUTODISCOVER_BODY or b"<!ENTITY" in body.upper():
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    node = root.find(f".//{{{REQUEST_NS}}}EMailAddress")
    if node is None:
        node = root.find(".//EMailAddress")
    return (node.text or "").strip() if node is not None else None


def outlook(address: str) -> bytes:
    host = settings.MAIL_HOSTNAME
    ET.register_namespace("", RESPONSE_NS)
    root = ET.Element(f"{{{RESPONSE_NS}}}Autodiscover")
    response = ET.SubElement(root, f"{{{OUTLOOK_NS}}}Response")
    account = ET.SubElement(response, f"{{{OUTLOOK_NS}}}Account")
    ET.SubElement(account, f"{{{OUTLOOK_NS}}}AccountType").text = "email"
    ET.SubElement(account, f"{{{OUTLOOK_NS}}}Action").text = "settings"
    for kind, port, encryption in (("IMAP", IMAPS, "SSL"), ("POP3", POP3S, "SSL"), ("SMTP", SMTPS, "SSL")):
        proto = ET.SubElement(account, f"{{{OUTLOOK_NS}}}Protocol")
        for name, value in (("Type", kind), ("Server", host), ("Port", str(port)), ("LoginName", address),
                            ("DomainRequired", "off"), ("SPA", "off"), ("SSL", "on"),
                            ("Encryption", encryption), ("AuthRequired", "on")):
            ET.SubElement(proto, f"{{{OUTLOOK_NS}}}{name}").text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def apple_profile(address: str, display_name: str = "") -> bytes:
    """An unsigned configuration profile with one IMAP account; iOS/macOS ask for the password."""
    host = settings.MAIL_HOSTNAME
    ident = ".".join(reversed(host.split(".")))
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mail.{address}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailhost:mail:{address}")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountName": display_name or address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": host,
        "IncomingMailServerPortNumber": IMAPS,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": host,
        "OutgoingMailServerPortNumber": SMTPS,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.profile.{address}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailhost:profile:{address}")).upper(),
        "PayloadDisplayName": f"Mail for {address}",
        "PayloadDescription": f"IMAP and SMTP settings for {address} on {host}",
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)
