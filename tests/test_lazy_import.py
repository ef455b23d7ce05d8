"""Importing mailqueue does only what is asked: the pure core comes without Celery, Redis, HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mailqueue
from mailqueue import api

HEAVY = ("celery", "kombu", "redis", "requests", "prometheus_client")


def run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_pure_core_imports_without_celery_redis_or_requests() -> None:
    code = (
        "import json, sys\n"
        "from mailqueue import build_payload, Settings\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    loaded = set(json.loads(run(code)))
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_every_name_in_all_resolves_in_a_fresh_process() -> None:
    code = (
        "import mailqueue\n"
        "missing = [name for name in mailqueue.__all__ if getattr(mailqueue, name, None) is None]\n"
        "print(missing)\n"
    )
    assert run(code).strip() == "[]"


def test_all_names_the_default_clients_functions_and_the_app() -> None:
    assert set(api.__all__) <= set(mailqueue.__all__)
    assert {"app", "celery", "send_email", "build_payload", "Settings", "Client"} <= set(
        mailqueue.__all__
    )
    assert len(mailqueue.__all__) == len(set(mailqueue.__all__))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        mailqueue.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("mailqueue.no_such_name resolved")


def test_celery_finds_the_app_with_its_tasks_by_package_name() -> None:
    code = (
        "from celery.app.utils import find_app\n"
        "app = find_app('mailqueue')\n"
        "print(app.main, 'mailqueue.send_email' in app.tasks, 'mailqueue.deliver' in app.tasks)\n"
    )
    assert run(code).split() == ["mailqueue", "True", "True"]


FIND_APP_THEN_LIST_RECEIVERS = (
    "import sys\n"
    "from celery.app.utils import find_app\n"
    "find_app('mailqueue')\n"
    "from mailqueue import client\n"
    "print('mailqueue.django' in sys.modules, [r.name for r in client._process_receivers])\n"
)


def test_the_app_of_a_django_projects_worker_sends_post_send() -> None:
    # Read before Celery sets Django up: the settings module is not imported here.
    out = run(FIND_APP_THEN_LIST_RECEIVERS, DJANGO_SETTINGS_MODULE="shop.settings")
    assert out.strip().split(maxsplit=1) == ["True", "['post_send']"]


def test_the_app_outside_a_django_project_loads_no_django_integration() -> None:
    out = run(FIND_APP_THEN_LIST_RECEIVERS)
    assert out.strip().split(maxsplit=1) == ["False", "[]"]
