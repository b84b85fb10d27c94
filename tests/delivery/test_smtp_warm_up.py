"""The SMTP service warms up before it listens: the first login and the first message after a
restart no longer pay for importing the DATA path, building the Celery app's task registry or
loading the password hasher's library while a client waits. Each check runs in a fresh
interpreter, since this test process has long imported all of it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT, subprocess_env

PROBE = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhost.settings")
import django
django.setup()
watched = ["delivery.tasks", "delivery.signing", "dkim", "argon2", "_argon2_cffi_bindings"]
before = [name for name in watched if name in sys.modules]
from delivery.smtp_server import warm_up
from mailhost.celery import app
finalized_before = app.finalized
warm_up()
print(json.dumps({"before": before, "after": [name for name in watched if name in sys.modules],
                  "finalized_before": finalized_before, "finalized": app.finalized,
                  "tasks": sorted(name for name in app.tasks if name.startswith("delivery."))}))
"""


def warm_up_in_a_fresh_process(**env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_message_and_login_find_their_modules_loaded_and_the_task_registry_built():
    probe = warm_up_in_a_fresh_process()
    assert probe["before"] == [] and probe["finalized_before"] is False
    assert probe["after"] == ["delivery.tasks", "delivery.signing", "dkim", "argon2", "_argon2_cffi_bindings"]
    assert probe["finalized"] is True
    assert "delivery.dispatch_due" in probe["tasks"]


def test_warming_up_needs_no_broker():
    # Nothing listens on the discard port: a broker that is down must not keep the service
    # from starting (kicks fail softly and the beat sweep finds the mail).
    probe = warm_up_in_a_fresh_process(CELERY_BROKER_URL="redis://127.0.0.1:9/0")
    assert probe["finalized"] is True
