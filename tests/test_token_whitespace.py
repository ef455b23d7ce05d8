"""A token read from a secret file ends in a newline. It is used without it, and a token
or secret that holds a control character inside is refused at start without being quoted.

The end-to-end test sends with such a token through a real worker, makes sends fail, and
then searches Redis (records, dead letters), the logs, the CLI's output and the dashboard."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import mailqueue
from mailqueue.client import Client
from mailqueue.dashboard import create_app as create_dashboard
from mailqueue.errors import ConfigurationError
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess, settings_env
from tests.test_secrets import dump_redis, wait_final

TOKEN = "tok-NEWLINE-5151-abcdef"
MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Order",
    "text": "It ships today.",
}
DASHBOARD_SECRET = "ops:dash-pass"


@pytest.mark.parametrize("raw", [TOKEN + "\n", TOKEN + "\r\n", f"  {TOKEN}\t", f"\n{TOKEN}\n"])
def test_surrounding_whitespace_is_no_part_of_a_token(raw: str) -> None:
    settings = Settings.from_env(
        {
            "MAILTRAP_API_TOKEN": raw,
            "MAILTRAP_BULK_API_TOKEN": raw,
            "MAILTRAP_TRACKING_SECRET": raw,
            "MAILQUEUE_WEBHOOK_SECRET": raw.replace(TOKEN, f"hooks:{TOKEN}"),
            "MAILQUEUE_ACCOUNTS": "eu",
            "MAILQUEUE_ACCOUNT_EU_API_TOKEN": raw,
        }
    )

    assert settings.api_token == TOKEN
    assert settings.bulk_api_token == TOKEN
    assert settings.tracking_secret == TOKEN
    assert settings.webhook_secret == (f"hooks:{TOKEN}",)
    assert settings.accounts["eu"].api_token == TOKEN


def test_a_token_of_whitespace_only_is_no_token() -> None:
    assert Settings(api_token="\n").api_token is None


@pytest.mark.parametrize(
    ("field", "env"),
    [("api_token", "MAILTRAP_API_TOKEN"), ("bulk_api_token", "MAILTRAP_BULK_API_TOKEN"),
     ("tracking_secret", "MAILTRAP_TRACKING_SECRET")],
)  # fmt: skip
def test_a_control_character_inside_is_refused_without_quoting_the_secret(
    field: str, env: str
) -> None:
    fields: dict[str, Any] = {field: "tok-INSIDE\n-9999"}
    with pytest.raises(ConfigurationError) as info:
        Settings(**fields)

    assert env in str(info.value)
    assert "INSIDE" not in str(info.value)
    assert "9999" not in str(info.value)


def test_the_worker_refuses_to_start_with_a_broken_token_in_one_line(redis_url: str) -> None:
    env = {**os.environ, "MAILQUEUE_BROKER_URL": redis_url,
           "MAILTRAP_API_TOKEN": "tok-INSIDE\n-9999"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "mailqueue", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    err = result.stderr.decode()
    assert result.returncode != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "MAILTRAP_API_TOKEN" in err
    assert "INSIDE" not in err + result.stdout.decode()


# -- end to end: the token appears nowhere ---------------------------------------


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(token=TOKEN, logs_delay=0.1) as server:
        yield server


@pytest.fixture
def newline_settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    settings = Settings(
        api_token=TOKEN + "\n",
        api_url=mailtrap.url,
        bulk_api_url=mailtrap.bulk_url,
        general_api_url=mailtrap.general_url,
        reconcile_settle=0.3,
        broker_url=redis_url,
        connect_timeout=1.0,
        read_timeout=1.0,
        retry_backoff=0.2,
        retry_backoff_max=0.5,
        max_retries=2,
        reclaim_idle=5.0,
        rate_limit=RateLimit.parse("1000/1s"),
    )
    mailqueue.configure(settings)
    return settings


def dashboard_pages(settings: Settings, send_ids: list[str]) -> str:
    client = Client(settings)
    app = create_dashboard(client, {"MAILQUEUE_DASHBOARD_SECRET": DASHBOARD_SECRET})
    pages = []
    paths = ["/dead-letters", "/api/dead-letters", "/"]
    paths += [f"{prefix}/search?q={sid}" for sid in send_ids for prefix in ("", "/api")]
    for path in paths:
        path, _, query = path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "HTTP_HOST": "dash.example",
            "wsgi.input": io.BytesIO(b""),
            "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(DASHBOARD_SECRET.encode()).decode(),
        }
        statuses: list[str] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], seen: list[str] = statuses
        ) -> None:
            seen.append(status)

        body = b"".join(app(environ, start_response))
        assert statuses[0].startswith("200"), (path, statuses)
        pages.append(body.decode())
    client.close()
    return "\n".join(pages)


@pytest.mark.e2e
def test_a_token_ending_in_a_newline_is_sent_without_it_and_appears_nowhere(
    mailtrap: LocalMailtrap,
    newline_settings: Settings,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The worker reads the token as a mounted secret file gives it: with its newline.
    raw_env = {"MAILTRAP_API_TOKEN": TOKEN + "\n"}
    with WorkerProcess(newline_settings, loglevel="DEBUG", extra_env=raw_env) as worker:
        sent = mailqueue.enqueue(MESSAGE)
        wait_final([sent])
        mailtrap.inject("503", 20)
        exhausted = mailqueue.enqueue({**MESSAGE, "subject": "gives up"})
        wait_final([exhausted])
        mailtrap.token = "another-token"  # every call is now refused: 401
        refused = mailqueue.enqueue({**MESSAGE, "subject": "unauthorized"})
        wait_final([refused])
        log = worker.output()

    records = {sid: mailqueue.get_status(sid) for sid in (sent, exhausted, refused)}
    assert records[sent]["state"] == "sent"  # type: ignore[index]
    assert records[exhausted]["state"] == "failed"  # type: ignore[index]
    assert records[refused]["error"]["status_code"] == 401  # type: ignore[index]

    env = {**os.environ, **settings_env(newline_settings), **raw_env}
    cli = []
    for args in (
        *(["status", sid] for sid in records),
        *(["status", sid, "--json"] for sid in records),
        ["dead-letters", "list"],
        ["dead-letters", "list", "--json"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "mailqueue", *args],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        cli.append((result.stdout + result.stderr).decode("utf-8", "replace"))
    dashboard = dashboard_pages(newline_settings, list(records))

    assert exhausted in cli[-2] and refused in dashboard
    found = {
        "worker log": log,
        "caplog": caplog.text,
        "records": json.dumps(records),
        "redis": dump_redis(redis_client),
        "cli": "\n".join(cli),
        "dashboard": dashboard,
    }
    assert [where for where, text in found.items() if TOKEN in text] == []
