"""`manage.py runsmtp` arguments and the handler's last line of defence."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import sys

import pytest
from django.core.management.base import CommandError

from delivery import replies
from delivery.management.commands.runsmtp import parse_listen
from delivery.smtp_server import Listener, MailHandler
from tests.support import ROOT, free_port, subprocess_env, wait_for_port


def test_listen_addresses_take_host_port_bracketed_ipv6_or_off():
    assert parse_listen("inbound", "127.0.0.1:2525") == Listener("inbound", "127.0.0.1", 2525)
    assert parse_listen("inbound", "[::1]:2525") == Listener("inbound", "::1", 2525)
    assert parse_listen("submissions", "off") is None
    for bad in ("::1:2525", "127.0.0.1", "127.0.0.1:99999", ":25"):
        with pytest.raises(CommandError):
            parse_listen("inbound", bad)


def test_a_handler_bug_never_reaches_the_client_as_raw_text():
    handler = MailHandler(Listener("inbound", "127.0.0.1", 25))
    reply = asyncio.run(handler.handle_exception(RuntimeError("database password is hunter2")))
    assert reply == replies.LOCAL_ERROR


def test_it_listens_on_ipv6_loopback_with_the_others_off(transactional_db, tmp_path, bob):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "manage.py", "runsmtp", "--inbound", f"[::1]:{port}",
                             "--submission", "off", "--submissions", "off"], cwd=ROOT,
                            env=subprocess_env(DNS_RESOLVERS="127.0.0.1:9"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, host="::1", proc=proc)
        with smtplib.SMTP("::1", port, timeout=20) as client:
            assert client.noop()[0] == 250
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert f"runsmtp: inbound on [::1]:{port}" in output
