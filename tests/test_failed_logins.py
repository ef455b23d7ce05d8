"""Failed logins on the dashboard and the webhook: counted in a metric, logged without the
secret tried and sparingly, and throttled per client after repeated failures."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailqueue.client import Client
from mailqueue.dashboard import DashboardApp
from mailqueue.dashboard import create_app as create_dashboard
from mailqueue.serving.failed_logins import FailedLogins
from mailqueue.settings import Settings
from mailqueue.webhooks import TrackingApp, create_app

DASHBOARD_SECRET = "ops:dash-pass"
HOOK_SECRET = "mailtrap:hook-pass"
GUESS = "GUESS-4711"


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def call(app: Any, path: str, authorization: str, client: str = "203.0.113.7",
         method: str = "GET", body: bytes = b"") -> tuple[int, dict[str, str]]:  # fmt: skip
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "HTTP_HOST": "dash.example",
        "REMOTE_ADDR": client,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_AUTHORIZATION": authorization,
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    b"".join(app(environ, start_response))
    return seen["status"], seen["headers"]


def failed_logins(server: str) -> float:
    return REGISTRY.get_sample_value("mailqueue_failed_logins_total", {"server": server}) or 0.0


@pytest.fixture
def dashboard(redis_url: str) -> Iterator[DashboardApp]:
    client = Client(Settings(broker_url=redis_url))
    yield create_dashboard(client, {"MAILQUEUE_DASHBOARD_SECRET": DASHBOARD_SECRET})
    client.close()


@pytest.fixture
def webhook(redis_url: str) -> TrackingApp:
    return create_app(Settings(redis_url=redis_url, webhook_secret=(HOOK_SECRET,)))


def test_dashboard_failures_are_counted_and_then_throttled(
    dashboard: DashboardApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = failed_logins("dashboard")
    limit = dashboard.auth.failed_logins.limit

    statuses = [call(dashboard, "/", basic(f"ops:{GUESS}{i}"))[0] for i in range(limit + 5)]

    assert statuses[:limit] == [401] * limit
    assert statuses[limit:] == [429] * 5
    assert failed_logins("dashboard") - before == limit
    # Throttled means throttled: the right password waits as well, with a Retry-After.
    status, headers = call(dashboard, "/", basic(DASHBOARD_SECRET))
    assert status == 429 and int(headers["Retry-After"]) > 0
    # Another client is not held back by this one.
    assert call(dashboard, "/", basic(DASHBOARD_SECRET), client="198.51.100.1")[0] == 200
    lines = [
        record.getMessage() for record in caplog.records if "credentials" in record.getMessage()
    ]
    assert 1 <= len(lines) <= 2
    assert "203.0.113.7" in lines[0]
    assert GUESS not in caplog.text and "ops:" not in caplog.text


def test_webhook_failures_are_counted_logged_and_throttled(
    webhook: TrackingApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = failed_logins("webhook")
    limit = webhook.handler.failed_logins.limit
    body = json.dumps({"events": []}).encode()

    statuses = [
        call(webhook, "/mailtrap/tracking/", basic(f"mailtrap:{GUESS}"), method="POST",
             body=body)[0]
        for _ in range(limit + 3)
    ]  # fmt: skip

    assert statuses == [401] * limit + [429] * 3
    assert failed_logins("webhook") - before == limit
    assert "request(s) refused for their credentials" in caplog.text
    assert GUESS not in caplog.text


def test_failures_are_forgotten_after_the_window() -> None:
    now = [0.0]
    logins = FailedLogins("webhook", limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        logins.failed("c")
    assert logins.retry_after("c") == pytest.approx(60.0)

    now[0] = 59.0
    assert logins.retry_after("c") == pytest.approx(1.0)
    now[0] = 60.0
    assert logins.retry_after("c") is None


def test_the_log_gets_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailqueue.serving.failed_logins")
    now = [0.0]
    logins = FailedLogins("dashboard", limit=1000, log_every=60.0, clock=lambda: now[0])

    for second in range(120):
        now[0] = float(second)
        logins.failed(f"192.0.2.{second % 7}")

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[1].startswith("dashboard: 60 request(s) refused")


def test_a_scan_from_many_addresses_keeps_memory_bounded() -> None:
    logins = FailedLogins("webhook", log_every=3600.0)
    from mailqueue.serving import failed_logins as module

    for i in range(module.MAX_CLIENTS + 500):
        logins.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")

    assert len(logins._failures) <= module.MAX_CLIENTS


def test_the_browsers_first_request_without_credentials_is_no_failed_login(
    dashboard: DashboardApp,
) -> None:
    before = failed_logins("dashboard")
    limit = dashboard.auth.failed_logins.limit

    statuses = [call(dashboard, "/", "")[0] for _ in range(limit + 5)]

    assert statuses == [401] * (limit + 5)
    assert failed_logins("dashboard") == before
    assert call(dashboard, "/", basic(DASHBOARD_SECRET))[0] == 200
