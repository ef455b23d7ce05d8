"""A project's own Celery worker that imports mailqueue is left alone by mailqueue's receivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

# Another project's worker module: it publishes through mailqueue (so it imports
# it, and with it every one of mailqueue's worker signal receivers), and reports
# what its process looks like once its own worker is ready.
SHOP_WORKER = """
import json, os

from celery import Celery, signals

import mailqueue
import mailqueue.tasks, mailqueue.tasks.worker_setup
from mailqueue import send_email

app = Celery("shop", broker="memory://")


@signals.worker_ready.connect
def report(sender=None, **_):
    import mailqueue.client

    path = os.environ["SHOP_REPORT"]
    with open(path + ".tmp", "w") as handle:
        json.dump(
            {
                "metrics_folder": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
                "mailqueue_client_built": mailqueue.client._default is not None,
            },
            handle,
        )
    os.replace(path + ".tmp", path)
"""


def test_another_apps_worker_init_and_ready_leave_the_process_untouched(tmp_path: Path) -> None:
    (tmp_path / "shop_worker.py").write_text(SHOP_WORKER)
    report = tmp_path / "report.json"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAILQUEUE_", "MAILTRAP_", "PROMETHEUS_"))
    }
    # mailqueue has no token and no reachable Redis here: its worker checks
    # would refuse to start, and a wake-up could not be published.
    env.update(
        PYTHONPATH=str(tmp_path),
        SHOP_REPORT=str(report),
        MAILQUEUE_BROKER_URL="redis://127.0.0.1:1/0",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "shop_worker", "worker", "--pool", "solo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not report.exists() and worker.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the shop's worker did not become ready within 60 s")
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)

    assert report.exists(), f"the shop's worker stopped before it was ready:\n{output}"
    assert json.loads(report.read_text()) == {
        "metrics_folder": None,
        "mailqueue_client_built": False,
    }
