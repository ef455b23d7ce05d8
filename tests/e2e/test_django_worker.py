"""A Django project's worker and shell read settings.py alone, as the backend does.

The worker is started as a person starts it, ``DJANGO_SETTINGS_MODULE=shop.settings
mailqueue worker`` in the project's folder, with no ``MAILTRAP_*`` or ``MAILQUEUE_*``
variable in its environment: the token and the stand-in's URL come from
``ANYMAIL``, the broker, key prefix and tuning from ``MAILQUEUE_*`` names in
settings.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailqueue.client import Client
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import free_port
from mailqueue.testing.worker import WorkerProcess, settings_env

from .helpers import killed_at_exit, wait_final

pytest.importorskip("django")

pytestmark = pytest.mark.e2e

MESSAGE = {
    "from_email": "Shop <shop@example.com>",
    "to": ["alice@example.com"],
    "subject": "Your order",
    "text": "It ships today.",
}


def write_project(folder: Path, settings: Settings) -> None:
    """A Django project ``shop`` whose settings.py holds every mailqueue setting."""
    values = settings_env(settings)
    anymail = {name: value for name, value in values.items() if name.startswith("MAILTRAP_")}
    own = {name: value for name, value in values.items() if name.startswith("MAILQUEUE_")}
    package = folder / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    lines = [
        'SECRET_KEY = "test-only"',
        "INSTALLED_APPS: list[str] = []",
        "DATABASES: dict[str, object] = {}",
        "USE_TZ = True",
        'EMAIL_BACKEND = "mailqueue.django.EmailBackend"',
        f"ANYMAIL = {anymail!r}",
        *(f"{name} = {value!r}" for name, value in own.items()),
        # Written as Python numbers, as a settings.py would.
        "MAILQUEUE_CALLS_IN_FLIGHT = 2",
        "MAILQUEUE_MAX_RETRIES = 0",
    ]
    (package / "settings.py").write_text("\n".join(lines) + "\n")


def project_env(**extra: str) -> dict[str, str]:
    """This process's environment without any mailqueue, Mailtrap or Anymail variable."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MAILTRAP_", "MAILQUEUE_", "ANYMAIL_"))
    }
    env.pop("CELERY_CONFIG_MODULE", None)
    return {**env, "DJANGO_SETTINGS_MODULE": "shop.settings", **extra}


def test_a_worker_started_in_a_django_project_sends_with_settings_py_alone(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    # A key prefix of its own: a worker that did not read settings.py would not find the work.
    settings = make_settings(key_prefix="shop")
    write_project(tmp_path, settings)
    worker = WorkerProcess(
        settings,
        concurrency=1,
        settings_in_env=False,
        command="mailqueue",
        cwd=str(tmp_path),
        extra_env={"DJANGO_SETTINGS_MODULE": "shop.settings"},
    )

    with killed_at_exit(worker):
        send_id = Client(settings).enqueue(MESSAGE)
        record = wait_final([send_id])[send_id]

    assert record["state"] == "sent", record
    (accepted,) = mailtrap.accepted
    assert accepted.token == settings.api_token


def test_get_status_in_a_fresh_django_process_reads_where_the_project_writes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(key_prefix="shop")
    write_project(tmp_path, settings)
    send_id = Client(settings).enqueue(MESSAGE)
    script = (
        "import sys, mailqueue\n"
        "record = mailqueue.get_status(sys.argv[1])\n"
        "print(record['state'] if record else None)\n"
    )

    # A broker in the environment that answers nowhere: the one in settings.py must win.
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-c", script, send_id],
        env=project_env(MAILQUEUE_BROKER_URL=nowhere),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "queued"


def test_a_django_project_whose_settings_cannot_be_imported_is_one_error_line(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailqueue", "worker"],
        env=project_env(DJANGO_SETTINGS_MODULE="shopp.settings"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "DJANGO_SETTINGS_MODULE" in lines[0] and "shopp.settings" in lines[0]


def test_a_mistaken_setting_in_settings_py_stops_the_worker_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(
        'SECRET_KEY = "test-only"\n'
        'ANYMAIL = {"MAILTRAP_API_TOKEN": "t"}\n'
        "MAILQUEUE_READ_TIMEOUT = -3\n"
    )

    result = subprocess.run(
        [sys.executable, "-m", "mailqueue", "worker"],
        env=project_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == "error: MAILQUEUE_READ_TIMEOUT must be more than 0 (seconds), not -3"
