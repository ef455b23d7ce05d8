"""Secrets never leave the settings: not in logs, errors, Redis, the CLI or metrics.

A recognizable API token and webhook secrets go through a real worker against
the local Mailtrap, through successes and failures (401, 5xx, resets, timeouts);
then everything the run produced is searched for them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
import requests

import mailqueue
from mailqueue.client import default
from mailqueue.core.payload import build_payload
from mailqueue.errors import DeliveryError
from mailqueue.mailtrap.transport import Transport
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import free_port
from mailqueue.testing.worker import WorkerProcess, settings_env
from mailqueue.webhooks.verify import RequestVerifier

TOKEN = "tok-SECRET-4242-abcdef"
TRACKING_SECRET = "trk-SECRET-9999-fedcba"
HOOK_PASSWORD = "pw-SECRET-7777-hook"
WEBHOOK_SECRET = f"hooks:{HOOK_PASSWORD}"
SECRETS = (TOKEN, TRACKING_SECRET, HOOK_PASSWORD)
MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Order",
    "text": "It ships today.",
}
FINAL = {"sent", "partially_sent", "failed"}


def leaks(text: str | bytes) -> list[str]:
    """The secrets (or their base64 / Basic-auth forms) found in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    forms = [*SECRETS, base64.b64encode(WEBHOOK_SECRET.encode()).decode()]
    return [form for form in forms if form in text]


def dump_redis(client: redis.Redis) -> str:
    """Every key and every value, whatever its type, as text."""
    out: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = cast(bytes, client.type(key)).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = client.dump(key)
        out.append(f"{key!r} {kind} {value!r}")
    return "\n".join(out)


def wait_final(send_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [default().store.state(sid) for sid in send_ids]
        if all(state in FINAL for state in states):
            return
        time.sleep(0.1)
    raise AssertionError(f"not final after {timeout} s: {states}")


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    server = LocalMailtrap(token=TOKEN, logs_delay=0.1)
    server.slow_seconds = 2.0
    with server:
        yield server


@pytest.fixture
def secret_settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    settings = Settings(
        api_token=TOKEN,
        api_url=mailtrap.url,
        bulk_api_url=mailtrap.bulk_url,
        general_api_url=mailtrap.general_url,
        reconcile_settle=0.3,
        broker_url=redis_url,
        tracking_secret=TRACKING_SECRET,
        webhook_secret=(WEBHOOK_SECRET,),
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


@pytest.mark.e2e
def test_a_run_with_failures_leaks_no_secret_anywhere(
    mailtrap: LocalMailtrap,
    secret_settings: Settings,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    metrics_port = free_port()
    worker = WorkerProcess(
        secret_settings,
        loglevel="DEBUG",
        extra_env={"MAILQUEUE_METRICS_PORT": str(metrics_port)},
    )
    with worker:
        sent = mailqueue.enqueue(MESSAGE)
        wait_final([sent])
        # Three tries, its whole budget: two unknown outcomes, then an answer lost.
        mailtrap.inject("500")
        mailtrap.inject("reset")
        mailtrap.inject("slow")
        retried = mailqueue.enqueue({**MESSAGE, "subject": "faults"})
        wait_final([retried])
        mailtrap.inject("503", 20)
        exhausted = mailqueue.enqueue({**MESSAGE, "subject": "gives up"})
        wait_final([exhausted])
        mailtrap.token = "another-token"  # every call is now refused: 401
        refused = mailqueue.enqueue({**MESSAGE, "subject": "unauthorized"})
        wait_final([refused])
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        log = worker.output()

    records = {sid: mailqueue.get_status(sid) for sid in (sent, retried, exhausted, refused)}
    # The run did meet each failure it claims to have covered.
    assert records[sent]["state"] == "sent"  # type: ignore[index]
    assert records[refused]["state"] == "failed"  # type: ignore[index]
    assert records[refused]["error"]["status_code"] == 401  # type: ignore[index]
    assert records[exhausted]["state"] == "failed"  # type: ignore[index]
    assert "mailqueue" in metrics

    assert leaks(log) == []
    assert leaks("\n".join(record.getMessage() for record in caplog.records)) == []
    assert leaks(caplog.text) == []
    assert leaks(json.dumps(records)) == []
    assert leaks(dump_redis(redis_client)) == []
    assert leaks(metrics) == []


def test_settings_repr_and_str_hide_every_secret(secret_settings: Settings) -> None:
    assert leaks(repr(secret_settings)) == []
    assert leaks(str(secret_settings)) == []
    assert "api_token='***'" in repr(secret_settings)


def test_delivery_errors_carry_no_token(mailtrap: LocalMailtrap, secret_settings: Settings) -> None:
    (call,) = build_payload(MESSAGE, secret_settings)
    errors: list[DeliveryError] = []
    with Transport(secret_settings) as transport:
        for fault in ("500", "reset", "slow"):
            mailtrap.inject(fault)
            with pytest.raises(DeliveryError) as info:
                transport.post(call)
            errors.append(info.value)
        mailtrap.token = "another-token"
        with pytest.raises(DeliveryError) as info:
            transport.post(call)
        errors.append(info.value)

    assert [error.status_code for error in errors] == [500, None, None, 401]
    for error in errors:
        text = f"{error} {error!r} {error.as_record()} {error.__cause__!r} {error.__context__!r}"
        assert leaks(text) == []


def test_cli_output_carries_no_secret(mailtrap: LocalMailtrap, secret_settings: Settings) -> None:
    env = {**os.environ, **settings_env(secret_settings)}
    send_id = mailqueue.enqueue(MESSAGE)
    outputs = []
    for args in (
        ["status", send_id],
        ["status", send_id, "--json"],
        ["status", "no-such-send"],
        ["send", "--from", "shop@example.com", "--to", "bob@example.com", "--subject", "Hi",
         "--text", "Body"],
        ["send", "--from", "not an address", "--to", "bob@example.com", "--text", "x"],
    ):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "mailqueue", *args],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        outputs.append(result.stdout + result.stderr)

    assert any(send_id.encode() in output for output in outputs[:2])
    for output in outputs:
        assert leaks(output) == []


def test_api_token_is_stored_only_as_a_hash_in_rate_limiter_keys(
    secret_settings: Settings, redis_client: redis.Redis
) -> None:
    from mailqueue.store.ratelimit import FleetRateLimiter

    FleetRateLimiter(redis_client, secret_settings).acquire(1.0)

    names = b" ".join(redis_client.scan_iter(count=1000))
    assert secret_settings.token_key.encode() in names
    assert leaks(names) == []
    assert leaks(dump_redis(redis_client)) == []


# -- constant-time webhook comparisons -------------------------------------------


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def test_basic_auth_is_compared_in_constant_time_against_every_credential(
    compare_calls: list[tuple[Any, Any]],
) -> None:
    verifier = RequestVerifier(("old:pw-one", WEBHOOK_SECRET))
    header = "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()

    assert verifier.verify(header, None, b"{}")

    assert compare_calls == [
        (WEBHOOK_SECRET.encode(), b"old:pw-one"),
        (WEBHOOK_SECRET.encode(), WEBHOOK_SECRET.encode()),
    ]


def test_a_wrong_password_is_compared_in_constant_time_too(
    compare_calls: list[tuple[Any, Any]],
) -> None:
    verifier = RequestVerifier((WEBHOOK_SECRET,))
    header = "Basic " + base64.b64encode(b"hooks:guess").decode()

    assert not verifier.verify(header, None, b"{}")

    assert compare_calls == [(b"hooks:guess", WEBHOOK_SECRET.encode())]


def test_signature_is_compared_in_constant_time(compare_calls: list[tuple[Any, Any]]) -> None:
    body = b'{"events": []}'
    signature = hmac.new(TRACKING_SECRET.encode(), body, hashlib.sha256).hexdigest()
    verifier = RequestVerifier(tracking_secret=TRACKING_SECRET)

    assert verifier.verify(None, signature, body)
    assert not verifier.verify(None, "0" * 64, body)

    assert compare_calls == [
        (signature.encode(), signature.encode()),
        (b"0" * 64, signature.encode()),
    ]
