"""Every SMTP reply the service sends, with its RFC 3463 enhanced status code.

Code and tests use these names, never retyped strings. `translate` maps the few fixed texts
aiosmtpd sends on its own (syntax errors, size and line-length refusals) to replies with enhanced
codes, so a client that saw ENHANCEDSTATUSCODES in EHLO gets them on every line.
"""

from __future__ import annotations

# Greeting and session
CLOSING = "221 2.0.0 Bye"
OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
RESET_OK = "250 2.0.0 Reset state"
NOOP_OK = "250 2.0.0 OK"
VRFY_CANNOT = "252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
SERVER_BUSY = "421 4.3.2 Too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
TIMEOUT = "421 4.4.2 Timeout, closing connection"

# Authentication (RFC 4954)
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_THROTTLED = "454 4.7.0 Too many failed logins from your network, try again later"
AUTH_NOT_ON_MX = "503 5.5.1 AUTH is not available on this port; use submission (587 or 465)"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_ALREADY = "503 5.5.1 Already authenticated"
TLS_ALREADY_ACTIVE = "503 5.5.1 TLS is already active"
AUTH_ABORTED = "501 5.7.0 Authentication aborted"
AUTH_BAD_BASE64 = "501 5.5.2 Cannot decode base64"
AUTH_BAD_PLAIN = "501 5.5.2 Cannot split AUTH PLAIN value"
AUTH_TEMP_FAILURE = "454 4.7.0 Temporary authentication failure, try again later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"

# Envelope
SENDER_NOT_ALLOWED = "550 5.7.1 Sender address not allowed for this login"
NULL_SENDER_NOT_ALLOWED = "550 5.7.1 The null sender is not allowed on submission"
BAD_SENDER_ADDRESS = "553 5.1.7 Sender address is not acceptable"
BAD_ADDRESS_SYNTAX = "553 5.1.3 Malformed address"
UNKNOWN_USER = "550 5.1.1 No such user here"
RELAY_DENIED = "550 5.7.1 Relaying denied"
BAD_DESTINATION = "550 5.1.3 Address refused: it carries routing or invalid syntax"
MAILBOX_DISABLED = "550 5.2.1 Mailbox disabled, not accepting messages"
MAILBOX_FULL = "452 4.2.2 Mailbox full, try again later"
MAILBOX_FULL_PERMANENT = "552 5.2.2 Mailbox full"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
LOOKUP_FAILED = "451 4.3.0 Temporary lookup failure, try again later"

# DATA
ACCEPTED = "250 2.0.0 OK: queued as {queue_id}"
BARE_LINE_ENDING = "550 5.6.11 Bare CR or LF in message; lines must end with CRLF"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
FROM_NOT_ALLOWED = "550 5.7.1 From: or Sender: header not allowed for this login"
FROM_MISSING = "550 5.7.1 Message must have exactly one From: address"
DMARC_REJECT = "550 5.7.1 Message refused by the sender domain's DMARC policy"
STORE_FAILED = "451 4.3.0 Local error in processing, try again later"
SMTPUTF8_REQUIRED = "553 5.6.7 Non-ASCII address requires SMTPUTF8"

# Protocol errors
LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
SYNTAX_ERROR = "501 5.5.4 Syntax error in parameters or arguments"
BAD_SEQUENCE = "503 5.5.1 Bad sequence of commands"
COMMAND_TOO_LONG = "500 5.5.2 Command line too long"
UNKNOWN_COMMAND = "500 5.5.1 Command not recognized"

# aiosmtpd's own texts (aiosmtpd/smtp.py 1.4.6) -> ours. Prefix matches, longest first.
_AIOSMTPD = {
    "250 OK": OK,
    "221 Bye": CLOSING,
    "354 End data with <CR><LF>.<CR><LF>": START_DATA,
    "252 Cannot VRFY user": VRFY_CANNOT,
    "500 Line too long": LINE_TOO_LONG,
    "500 Command line too long": COMMAND_TOO_LONG,
    "500 Error: command": UNKNOWN_COMMAND,
    "500 Error: bad syntax": SYNTAX_ERROR.replace("501", "500", 1),
    "500 Error: strict ASCII mode": SMTPUTF8_REQUIRED,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "552 Error: message size exceeds": MESSAGE_TOO_BIG,
    "553 5.1.3 Error: malformed address": BAD_ADDRESS_SYNTAX,
    "501 Syntax:": None,          # keep the syntax text, add the code
    "501 Error:": None,
    "503 Error:": None,
    "503 Already authenticated": AUTH_ALREADY,
    "501 Not enough value": SYNTAX_ERROR,
    "501 Too many values": SYNTAX_ERROR,
    "555 MAIL FROM parameters": "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
    "555 RCPT TO parameters": "555 5.5.4 RCPT TO parameters not recognized or not implemented",
    "502 EXPN not implemented": "502 5.5.1 EXPN not implemented",
    "502 Could not VRFY": "502 5.5.4 Could not VRFY",
    "530 Must issue a STARTTLS": "530 5.7.0 Must issue a STARTTLS command first",
    "554 Command refused due to lack of security": "554 5.7.0 Command refused due to lack of security",
    "501 5.5.2 Can't decode base64": AUTH_BAD_BASE64,
    "501 5.5.2 Can't split auth value": AUTH_BAD_PLAIN,
    "501 5.7.0 Auth aborted": AUTH_ABORTED,
    "454 TLS not available": "454 4.7.0 TLS not available",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
}
_ENHANCED_FOR_CLASS = {"4": "4.0.0", "5": "5.5.1"}
_SORTED = sorted(_AIOSMTPD.items(), key=lambda item: -len(item[0]))


def translate(status: str) -> str:
    """Give aiosmtpd's fixed replies an enhanced status code; ours pass through unchanged."""
    if len(status) < 4 or status[4:5].isdigit() or status[3:4] == "-":
        return status
    for prefix, replacement in _SORTED:
        if status.startswith(prefix):
            if replacement is not None:
                return replacement
            break
    if status[:1] in "45" and status[:3].isdigit():
        return f"{status[:3]} {_ENHANCED_FOR_CLASS[status[0]]} {status[4:]}"
    return status


def code(reply: str) -> int:
    return int(reply[:3])


def accepted(queue_id: str) -> str:
    return ACCEPTED.format(queue_id=queue_id)


def rate_limited(per_hour: int, holder: str = "this login") -> str:
    """RCPT over an hourly sending limit (of a login, a mailbox or a domain): temporary, so the
    client keeps the mail for later."""
    return f"451 4.7.1 Sending limit of {per_hour} recipients an hour reached for {holder}, try again later"
