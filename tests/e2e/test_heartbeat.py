"""``--heartbeat-file``: a worker keeps the file fresh while it runs and removes it at stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailqueue.settings import Settings
from mailqueue.testing.worker import settings_env

pytestmark = pytest.mark.e2e

CELERY_WORKER = [sys.executable, "-m", "celery", "-A", "mailqueue", "worker"]
# Neither start gets as far as the broker; an unreachable one makes sure of it.
NO_BROKER = {**os.environ, "MAILQUEUE_BROKER_URL": "redis://127.0.0.1:1/0"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def test_worker_touches_its_heartbeat_file_while_running_and_removes_it_at_stop(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    beat = tmp_path / "heartbeat"
    env = {**os.environ, **settings_env(make_settings()), "PROMETHEUS_MULTIPROC_DIR": ""}
    worker = subprocess.Popen(
        [
            *CELERY_WORKER,
            *("--pool", "solo", "--without-mingle", "--heartbeat-file", str(beat)),
            *("--heartbeat-file-interval", "0.5"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(beat.exists, "the heartbeat file appears", timeout=120)
        first = beat.stat().st_mtime_ns
        wait_for(lambda: beat.stat().st_mtime_ns > first, "a second beat", timeout=120)

        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    assert worker.returncode == 0, errors.decode(errors="replace")[-3000:]
    assert not beat.exists()


def test_a_heartbeat_file_in_an_unwritable_folder_is_one_error_line() -> None:
    result = subprocess.run(
        [*CELERY_WORKER, "--heartbeat-file", "/proc/self/heartbeat"],
        env=NO_BROKER,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "--heartbeat-file" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_metrics_folder_stops_the_worker_with_one_error_line() -> None:
    result = subprocess.run(
        [*CELERY_WORKER, "--pool", "solo"],
        env={**NO_BROKER, "PROMETHEUS_MULTIPROC_DIR": "/proc/self"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: PROMETHEUS_MULTIPROC_DIR=/proc/self is not a writable directory: mount an "
        "empty, writable folder there (a tmpfs or emptyDir), or unset it"
    ]
    assert "Traceback" not in result.stderr
