"""A real worker and the webhook app serve every metric README.md lists, and nothing unlisted."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import free_port
from mailqueue.testing.worker import WorkerProcess, settings_env
from mailqueue.testing.wsgi import serving
from mailqueue.webhooks import create_app

from .helpers import wait_final

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
SENT_ONCE = 'mailqueue_sends_total{outcome="sent"} 1.0'


def readme_metrics() -> set[str]:
    section = README.read_text().split("## Metrics and logs", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(mailqueue_[a-z_]+)", section, re.MULTILINE))


def served_metrics(exposition: str) -> set[str]:
    names = set(re.findall(r"^# TYPE (mailqueue_[a-z_]+) ", exposition, re.MULTILINE))
    # prometheus_client's creation-time series of each counter and histogram.
    return {name for name in names if not name.endswith("_created")}


def scrape_until(url: str, wanted: str, timeout: float = 90.0) -> str:
    """Scrape ``url`` until its body contains ``wanted``; the last body otherwise."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            body = requests.get(url, timeout=5).text
        except requests.ConnectionError:
            body = ""
        if wanted in body:
            break
        time.sleep(0.1)
    return body


def test_worker_without_a_metrics_folder_counts_its_pool_children_sends(
    make_settings: object, mailtrap: LocalMailtrap
) -> None:
    settings: Settings = make_settings()  # type: ignore[operator]
    port = free_port()
    # No PROMETHEUS_MULTIPROC_DIR: the worker makes a private folder for its pool.
    env = {"MAILQUEUE_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": ""}
    with WorkerProcess(settings, concurrency=2, pool="prefork", extra_env=env):
        send_id = mailqueue.send_email.delay(
            {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
        ).id
        wait_final([send_id], timeout=90)
        body = scrape_until(f"http://127.0.0.1:{port}/metrics", SENT_ONCE)

    assert SENT_ONCE in body
    assert 'mailqueue_api_requests_total{path="send",status="200"}' in body


def test_readme_lists_exactly_the_metrics_the_worker_and_webhook_serve(
    make_settings: object, mailtrap: LocalMailtrap
) -> None:
    settings: Settings = make_settings(webhook_secret=("user:pass",))  # type: ignore[operator]
    port = free_port()
    with WorkerProcess(settings, extra_env={"MAILQUEUE_METRICS_PORT": str(port)}):
        send_id = mailqueue.send_email.delay(
            {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
        ).id
        wait_final([send_id], timeout=90)
        worker_body = scrape_until(f"http://127.0.0.1:{port}/metrics", SENT_ONCE)
    with serving(create_app(settings)) as base:
        event = {
            "event": "open",
            "message_id": "m-1",
            "email": "b@example.com",
            "event_id": "e1",
            "timestamp": 1714564800,
        }
        answer = requests.post(
            f"{base}/mailtrap/tracking/",
            data=json.dumps({"events": [event]}),
            headers={"Content-Type": "application/json"},
            auth=("user", "pass"),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        webhook_body = requests.get(f"{base}/metrics", timeout=10).text
        health = requests.get(f"{base}/healthz", timeout=10)

    assert health.status_code == 200
    assert 'mailqueue_webhook_events_total{result="received",type="opened"}' in webhook_body
    assert served_metrics(worker_body) | served_metrics(webhook_body) == readme_metrics()


def test_liveness_probes_answered_by_a_worker_leave_no_file_in_its_metrics_folder(
    make_settings: object, mailtrap: LocalMailtrap
) -> None:
    settings: Settings = make_settings()  # type: ignore[operator]
    node = f"probed-{os.getpid()}@{socket.gethostname()}"
    answers, probe_pids = [], []
    probe_env = {**os.environ, **settings_env(settings)}
    with WorkerProcess(settings, hostname=node) as worker:
        folder = Path(str(worker.metrics_dir))
        for _ in range(3):
            probe = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "mailqueue", "inspect", "ping",
                 "--destination", node, "--timeout", "10"],
                # As an exec probe runs: with the container's environment, the folder's too.
                env={**probe_env, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            answers.append(probe.communicate(timeout=60)[0])
            probe_pids.append(probe.pid)
        files = sorted(path.name for path in folder.iterdir())

    for answer in answers:
        assert "pong" in answer, answer
    # prometheus_client names a process's files after its pid: none may be a probe's.
    assert [name for name in files for pid in probe_pids if name.endswith(f"_{pid}.db")] == []
