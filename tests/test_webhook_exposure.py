"""What the webhook server shows and logs: a body that breaks the parser costs one log
line, not a traceback; ``/metrics`` can move to a port of its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from mailqueue.settings import Settings
from mailqueue.testing.redis_server import free_port
from mailqueue.webhooks import create_app

SIGNING_SECRET = "0123456789abcdef0123456789abcdef"


def nested_body(depth: int) -> bytes:
    variables = '{"a":' * depth + "1" + "}" * depth
    return (
        '{"events":[{"event":"delivery","message_id":"m-1","timestamp":1714564800,'
        f'"custom_variables":{variables}}}]}}'
    ).encode()


def test_a_deeply_nested_signed_body_is_400_with_one_log_line(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(Settings(redis_url=redis_url, tracking_secret=SIGNING_SECRET))
    body = nested_body(700)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/mailtrap/tracking/",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_MAILTRAP_SIGNATURE": hmac.new(
            SIGNING_SECRET.encode(), body, hashlib.sha256
        ).hexdigest(),
        "wsgi.input": io.BytesIO(body),
    }
    seen: list[str] = []

    b"".join(app(environ, lambda status, headers: seen.append(status)))

    assert seen[0].startswith("400")
    webhook_records = [r for r in caplog.records if r.name.startswith("mailqueue.webhooks")]
    assert webhook_records, "the refusal is logged"
    for record in webhook_records:
        assert record.exc_info is None
        assert "\n" not in record.getMessage() and len(record.getMessage()) < 200
    assert len(caplog.text) < 2000


def wait_for(url: str, timeout: float = 20.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.1)


def test_metrics_can_be_served_on_a_port_of_their_own(redis_url: str) -> None:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "MAILQUEUE_WEBHOOK_SECRET": "hooks:pw", "MAILQUEUE_REDIS_URL": redis_url}
    command = [sys.executable, "-m", "mailqueue", "serve-webhooks", "--port", str(port),
               "--metrics-port", str(metrics_port)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz")
        on_webhook_port = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        own = wait_for(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert health.status_code == 200
    assert on_webhook_port.status_code == 404
    assert own.status_code == 200 and "mailqueue_webhook_events" in own.text


def test_without_the_option_metrics_stay_beside_the_tracking_path(redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "MAILQUEUE_WEBHOOK_SECRET": "hooks:pw", "MAILQUEUE_REDIS_URL": redis_url}
    command = [sys.executable, "-m", "mailqueue", "serve-webhooks", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        metrics = wait_for(f"http://127.0.0.1:{port}/metrics")
        refused = requests.post(
            f"http://127.0.0.1:{port}/mailtrap/tracking/",
            data=b"{}",
            headers={"Authorization": "Basic " + base64.b64encode(b"hooks:no").decode()},
            timeout=5,
        )
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert metrics.status_code == 200
    assert refused.status_code == 401


def test_a_busy_metrics_port_is_one_error_line(redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {**os.environ, "MAILQUEUE_WEBHOOK_SECRET": "hooks:pw",
               "MAILQUEUE_REDIS_URL": redis_url}  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "mailqueue", "serve-webhooks", "--port", str(free_port()),
             "--metrics-port", str(taken)],
            env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip

    lines = result.stderr.decode().splitlines()
    assert result.returncode != 0
    assert lines[-1].startswith("error: cannot serve metrics on 127.0.0.1:"), lines
    assert "Traceback" not in result.stderr.decode()
