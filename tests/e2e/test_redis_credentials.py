"""A Redis password in the URLs is never shown: not in a repr, a log line, an error or a metric.

One run against a private Redis that asks for a password, through a delivery,
an outage (the worker, a producer, the webhook, the metrics scrape and the
command line each meet the lost connection) and the recovery; then everything
the run produced is searched for the password. Each place must also have named
the Redis it failed to reach, masked, so that a place that said nothing about
Redis cannot pass for one that hid the password.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis
import requests

import mailqueue
from mailqueue.errors import BrokerUnavailable
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import RedisServer, free_port
from mailqueue.testing.worker import WorkerProcess, settings_env
from mailqueue.testing.wsgi import serving
from mailqueue.webhooks import create_app

from .helpers import wait_final

pytestmark = pytest.mark.e2e

PASSWORD = "rds-SECRET-5151-word"
MESSAGE = {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "S", "text": "T"}
EVENT = {
    "event": "open",
    "message_id": "m-1",
    "email": "b@example.com",
    "event_id": "e-1",
    "timestamp": 1714564800,
}


@pytest.fixture
def guarded() -> Iterator[RedisServer]:
    """A private Redis that asks for a password and keeps its data across a restart."""
    with RedisServer(password=PASSWORD, appendonly=True) as server:
        yield server


@pytest.fixture
def settings(guarded: RedisServer, mailtrap: LocalMailtrap) -> Settings:
    built = mailtrap.settings(
        guarded.url,
        redis_url=guarded.url,
        webhook_secret=("hooks:pass",),
        rate_limit="1000/1s",
        connect_timeout=2.0,
        read_timeout=2.0,
    )
    mailqueue.configure(built)
    return built


def masked(server: RedisServer) -> str:
    return f"redis://***@127.0.0.1:{server.port}/0"


def run_cli(settings: Settings, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mailqueue", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


def poll(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.1)


def scrape(port: int) -> str:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except requests.ConnectionError:
        return ""


def dump(server: RedisServer) -> str:
    client = redis.Redis.from_url(server.url)
    try:
        return "\n".join(f"{key!r} {client.dump(key)!r}" for key in client.scan_iter(count=1000))
    finally:
        client.close()


def test_a_redis_password_shows_nowhere_through_a_run_and_an_outage(
    guarded: RedisServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    shown: dict[str, str] = {"settings": repr(settings) + str(settings)}
    with (
        WorkerProcess(
            settings, loglevel="DEBUG", extra_env={"MAILQUEUE_METRICS_PORT": str(port)}
        ) as worker,
        serving(create_app(settings)) as webhook,
    ):
        first = mailqueue.enqueue(MESSAGE)
        wait_final([first], timeout=90)
        shown["status"] = run_cli(settings, "status", first)

        guarded.halt()
        with pytest.raises(BrokerUnavailable) as refused:
            mailqueue.enqueue(MESSAGE)
        shown["producer error"] = f"{refused.value}\n{refused.value!r}"
        answer = requests.post(
            f"{webhook}/mailtrap/tracking/", json={"events": [EVENT]}, auth=("hooks", "pass"),
            timeout=30,
        )  # fmt: skip
        shown["webhook answer"] = f"{answer.status_code} {answer.text}"
        poll(lambda: "mailqueue_redis_up 0.0" in scrape(port), "the scrape sees Redis down")
        shown["metrics, Redis down"] = scrape(port)
        shown["cli, Redis down"] = run_cli(settings, "status", first)
        shown["lanes, Redis down"] = run_cli(settings, "lanes")
        poll(lambda: "Connection refused" in worker.output(), "the worker meets the outage")

        guarded.start()
        second = mailqueue.enqueue(MESSAGE)
        wait_final([second], timeout=120)
        shown["metrics"] = scrape(port)
        shown["worker log"] = worker.output()
    shown["this process's log"] = caplog.text
    shown["records"] = json.dumps([mailqueue.get_status(first), mailqueue.get_status(second)])
    shown["redis"] = dump(guarded)

    assert answer.status_code != 200  # Mailtrap must send the batch again
    for where in ("producer error", "cli, Redis down", "lanes, Redis down"):
        assert masked(guarded) in shown[where], f"{where}: {shown[where]}"
    assert f"127.0.0.1:{guarded.port}" in shown["worker log"]
    assert 'mailqueue_sends_total{outcome="sent"} 2.0' in shown["metrics"]
    leaked = [where for where, text in shown.items() if PASSWORD in text]
    assert leaked == []
