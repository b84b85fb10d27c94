"""docker-compose.yml only runs commands that exist in the project (Docker cannot run here)."""

import importlib
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from tests.support import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = {name: svc for name, svc in COMPOSE["services"].items() if "build" in svc}


def test_the_production_stack_has_every_piece():
    assert {"postgres", "redis", "web", "smtp", "worker", "beat"} <= set(COMPOSE["services"])
    assert "mail" in COMPOSE["volumes"]
    assert all("mail:/var/mail/mailhost" in svc["volumes"] for svc in SERVICES.values())


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_project_service_runs_a_command_that_exists(name):
    command = SERVICES[name]["command"]
    program = command[0]
    if program == "python":
        assert command[1] == "manage.py"
        assert command[2] in get_commands(), f"{name}: manage.py {command[2]} does not exist"
    elif program == "celery":
        assert command[1:3] == ["-A", "mailhost"]
        from mailhost.celery import app

        assert command[3] in ("worker", "beat")
        assert app.main == "mailhost"
    elif program == "gunicorn":
        module, attr = command[1].split(":")
        assert callable(getattr(importlib.import_module(module), attr))
    else:
        pytest.fail(f"{name}: unexpected program {program}")


def test_the_build_and_env_files_it_names_exist():
    assert (ROOT / "Dockerfile").is_file()
    assert Path(ROOT / ".env.example").is_file()
    env_keys = {line.split("=")[0].lstrip("# ") for line in (ROOT / ".env.example").read_text().splitlines()
                if "=" in line}
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "MAIL_ROOT", "MAIL_HOSTNAME", "SECRET_KEY"} <= env_keys
