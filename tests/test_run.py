"""`make run`'s process set (the Procfile under honcho): web on 127.0.0.1:8000 and a worker that
answers a ping, all stopped by one SIGTERM."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.support import ROOT, wait_for_port


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack(tmp_path):
    busy = [p for p in (8000, 2525, 2587, 2465) if port_busy(p)]
    if busy:
        message = f"ports {busy} are taken (is `make run` already running?)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/run.sqlite3", MAIL_ROOT=str(tmp_path / "mail"),
               MAIL_HOSTNAME="mail.run.test")
    subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--noinput", "-v0"],
                   cwd=ROOT, env=env, check=True, timeout=120)
    proc = subprocess.Popen([str(ROOT / ".venv/bin/honcho"), "start", "-f", "Procfile"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    yield proc, env
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_run_serves_admin_and_a_worker_that_answers_then_stops_on_sigterm(stack):
    proc, env = stack
    wait_for_port(8000, timeout=60, proc=proc)
    with urllib.request.urlopen("http://127.0.0.1:8000/admin/", timeout=10) as response:
        # /admin/ sends an anonymous visitor to the portal's login (throttled, 2FA-aware).
        assert response.status == 200 and b'name="password"' in response.read()
        assert response.url.startswith("http://127.0.0.1:8000/login/")
    deadline, answered = time.monotonic() + 60, False
    while time.monotonic() < deadline and not answered:
        ping = subprocess.run([str(ROOT / ".venv/bin/celery"), "-A", "mailhost", "inspect", "ping", "-t", "2"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        answered = "pong" in ping.stdout
    assert answered, ping.stdout + ping.stderr
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running after SIGTERM: {leftovers}"
    assert not port_busy(8000)
