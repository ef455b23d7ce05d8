"""Transport against LocalMailtrap over real HTTP: answers, retries, limits, deadlines, secrecy."""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from mailqueue.core.payload import ApiCall
from mailqueue.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentDeliveryError,
    RateLimited,
    TransientDeliveryError,
)
from mailqueue.mailtrap import transport as transport_module
from mailqueue.mailtrap.transport import Transport, backoff_seconds
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap

TOKEN = "tok-Recognizable-Secret-7f3a9c"
SENDER = {"email": "sender@example.com"}


def single(path: str = "send", *addresses: str) -> ApiCall:
    to = addresses or ("alice@example.com",)
    body = {"from": SENDER, "to": [{"email": a} for a in to], "subject": "Hi", "text": "Hello"}
    return ApiCall(path, body, (tuple(to),))


def batch(path: str, *addresses: str) -> ApiCall:
    body = {
        "base": {"from": SENDER, "subject": "Hi", "text": "Hello"},
        "requests": [{"to": [{"email": a}]} for a in addresses],
    }
    return ApiCall(path, body, tuple((a,) for a in addresses))


@dataclass
class RecordingLimiter:
    acquired: list[float | None] = field(default_factory=list)
    penalties: list[float | None] = field(default_factory=list)

    def acquire(self, max_wait: float | None = None) -> float:
        self.acquired.append(max_wait)
        return 0.0

    def penalize(self, retry_after: float | None) -> None:
        self.penalties.append(retry_after)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_module, "BACKOFF_MIN", 0.01)
    monkeypatch.setattr(transport_module, "BACKOFF_MAX", 0.05)


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(token=TOKEN, retry_after=True) as server:
        yield server


def make_transport(server: LocalMailtrap, **settings: Any) -> Transport:
    limiter = settings.pop("limiter", None)
    values: dict[str, Any] = {
        "api_token": TOKEN,
        "api_url": server.url,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
    }
    values.update(settings)
    return Transport(Settings(**values), limiter=limiter)


@pytest.fixture
def transport(mailtrap: LocalMailtrap) -> Iterator[Transport]:
    client = make_transport(mailtrap)
    yield client
    client.close()


# -- answers --------------------------------------------------------------------


def test_send_returns_mailtraps_message_id_per_recipient(
    mailtrap: LocalMailtrap, transport: Transport
) -> None:
    [result] = transport.send(single("send", "a@example.com", "b@example.com"))
    assert result.ok
    [accepted] = mailtrap.accepted
    assert result.message_ids == dict(zip(accepted.recipients, accepted.message_ids, strict=True))


def test_sandbox_id_is_shared_by_all_recipients(mailtrap: LocalMailtrap) -> None:
    with make_transport(mailtrap, sandbox_id="4242") as client:
        [result] = client.send(single("send/4242", "a@example.com", "b@example.com"))
    [accepted] = mailtrap.accepted
    assert accepted.inbox_id == "4242"
    assert result.message_ids == dict.fromkeys(
        ("a@example.com", "b@example.com"), accepted.message_ids[0]
    )


def test_batch_partial_failure_gives_per_request_results(transport: Transport) -> None:
    ok, refused = transport.send(batch("batch", "a@example.com", "b@nowhere.invalid"))
    assert ok.ok
    assert ok.message_ids["a@example.com"]
    assert not refused.ok
    assert "b@nowhere.invalid" in (refused.error or "")
    assert refused.message_ids == {"b@nowhere.invalid": None}


def test_sends_reuse_one_keep_alive_connection(
    mailtrap: LocalMailtrap, transport: Transport
) -> None:
    for _ in range(20):
        transport.send(single())
    assert mailtrap.stats.requests == 20
    assert mailtrap.stats.connections == 1


def test_request_body_is_the_calls_json(mailtrap: LocalMailtrap, transport: Transport) -> None:
    call = single()
    call.json["subject"] = "Grüße ✓"
    transport.post(call)
    assert mailtrap.accepted[0].payload == call.json


def test_session_sends_mailtrap_headers(transport: Transport) -> None:
    headers = transport._session.headers
    assert headers["Api-Token"] == TOKEN
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json"
    assert str(headers["User-Agent"]).startswith("mailqueue/")


def test_missing_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Transport(Settings(api_url="http://127.0.0.1:9/api/"))


def test_wrong_token_is_permanent_and_not_retried(mailtrap: LocalMailtrap) -> None:
    client = make_transport(mailtrap, api_token="another-token")
    with client, pytest.raises(PermanentDeliveryError, match="rejected the API token") as info:
        client.send(single())
    assert info.value.status_code == 401
    assert mailtrap.stats.requests == 1


def test_validation_error_is_permanent_and_not_retried(
    mailtrap: LocalMailtrap, transport: Transport
) -> None:
    call = single()
    del call.json["subject"]
    with pytest.raises(PermanentDeliveryError, match="'subject' is required") as info:
        transport.send(call)
    assert info.value.status_code == 400
    assert mailtrap.stats.requests == 1


def test_post_makes_exactly_one_request(mailtrap: LocalMailtrap, transport: Transport) -> None:
    mailtrap.inject("503")
    with pytest.raises(TransientDeliveryError):
        transport.post(single())
    assert mailtrap.stats.requests == 1


# -- retries --------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "503", "reset"])
def test_send_retries_absorb_transient_faults(
    mailtrap: LocalMailtrap, transport: Transport, fault: str
) -> None:
    mailtrap.inject(fault, times=2)
    [result] = transport.send(single())
    assert result.ok
    assert mailtrap.stats.requests == 3
    assert len(mailtrap.accepted) == 1


def test_send_gives_up_after_three_attempts(mailtrap: LocalMailtrap, transport: Transport) -> None:
    mailtrap.inject("500", times=5)
    with pytest.raises(TransientDeliveryError) as info:
        transport.send(single())
    assert info.value.status_code == 500
    assert mailtrap.stats.requests == 3


def test_rate_limited_waits_retry_after_and_penalizes_the_limiter(
    mailtrap: LocalMailtrap, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailqueue.mailtrap.transport")
    limiter = RecordingLimiter()
    mailtrap.inject("429")
    with make_transport(mailtrap, limiter=limiter) as client:
        [result] = client.send(single())
    waits = [
        cast(tuple[Any, ...], r.args)[1] for r in caplog.records if r.msg.startswith("Retrying")
    ]
    assert result.ok
    assert limiter.penalties == [1.0]
    assert len(limiter.acquired) == 2
    assert len(waits) == 1
    assert waits[0] >= 1.0  # Retry-After: 1


def test_limiter_is_asked_before_every_attempt_with_the_time_left(
    mailtrap: LocalMailtrap,
) -> None:
    limiter = RecordingLimiter()
    mailtrap.inject("503", times=2)
    with make_transport(mailtrap, limiter=limiter) as client:
        client.send(single(), deadline=time.monotonic() + 30)
    assert len(limiter.acquired) == 3
    assert all(wait is not None and 0 < wait <= 30 for wait in limiter.acquired)
    assert limiter.penalties == []


def test_retry_that_would_pass_the_deadline_is_not_started(
    mailtrap: LocalMailtrap, transport: Transport
) -> None:
    mailtrap.inject("429")  # Retry-After: 1
    with pytest.raises(RateLimited):
        transport.send(single(), deadline=time.monotonic() + 0.5)
    assert mailtrap.stats.requests == 1


def test_read_timeout_is_transient_and_maybe_delivered(mailtrap: LocalMailtrap) -> None:
    mailtrap.slow_seconds = 1.0
    mailtrap.inject("slow")
    client = make_transport(mailtrap, read_timeout=0.2)
    with client, pytest.raises(TransientDeliveryError) as info:
        client.post(single())
    assert info.value.maybe_delivered
    assert len(mailtrap.accepted) == 1


def test_non_json_answer_is_permanent_and_maybe_delivered(
    mailtrap: LocalMailtrap, transport: Transport
) -> None:
    mailtrap.inject("nonjson")
    with pytest.raises(PermanentDeliveryError) as info:
        transport.send(single())
    assert info.value.maybe_delivered
    assert mailtrap.stats.requests == 1


def test_refused_connection_is_transient_and_not_delivered() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(api_token=TOKEN, api_url=f"http://127.0.0.1:{port}/api/")
    with Transport(settings) as client, pytest.raises(TransientDeliveryError) as info:
        client.post(single())
    assert not info.value.maybe_delivered


def test_on_error_sees_failed_attempts_that_a_retry_recovered_from(
    mailtrap: LocalMailtrap, transport: Transport
) -> None:
    seen: list[DeliveryError] = []
    mailtrap.inject("lost")
    [result] = transport.send(single(), on_error=seen.append)
    assert result.ok
    [error] = seen
    assert isinstance(error, TransientDeliveryError)
    assert error.maybe_delivered
    assert len(mailtrap.accepted) == 2  # the lost answer's message went out too


def test_observer_sees_every_attempt(mailtrap: LocalMailtrap) -> None:
    seen: list[tuple[str, int | None, float]] = []
    mailtrap.inject("503")
    mailtrap.inject("reset")
    settings = Settings(api_token=TOKEN, api_url=mailtrap.url)
    with Transport(settings, observer=lambda *event: seen.append(event)) as client:
        client.send(single())
    assert [(path, status) for path, status, _ in seen] == [
        ("send", 503),
        ("send", None),
        ("send", 200),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


def test_backoff_grows_between_the_bounds() -> None:
    rng = random.Random(3)
    first = [backoff_seconds(1, rng=rng) for _ in range(200)]
    third = [backoff_seconds(3, rng=rng) for _ in range(200)]
    tenth = [backoff_seconds(10, rng=rng) for _ in range(200)]
    assert max(first) == pytest.approx(transport_module.BACKOFF_MIN)
    assert max(third) > max(first)
    assert min(tenth) >= transport_module.BACKOFF_MIN
    assert max(tenth) <= transport_module.BACKOFF_MAX


def test_backoff_is_never_shorter_than_retry_after() -> None:
    assert backoff_seconds(1, retry_after=7.0) == 7.0


# -- secrecy --------------------------------------------------------------------


def test_token_never_appears_in_errors_or_logs(
    mailtrap: LocalMailtrap, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    mailtrap.slow_seconds = 0.5

    def attempt(client: Transport, call: ApiCall) -> None:
        try:
            client.send(call)
        except DeliveryError as exc:
            errors.append(exc)
            if exc.__cause__ is not None:
                errors.append(exc.__cause__)

    with make_transport(mailtrap, read_timeout=0.2) as client:
        for fault in ("500", "503", "429", "reset", "lost", "slow", "nonjson"):
            mailtrap.inject(fault, times=3)
            attempt(client, single())
        bad = single()
        del bad.json["from"]
        attempt(client, bad)
    with make_transport(mailtrap, api_token=TOKEN + "-wrong") as client:
        attempt(client, single())
    closed = Settings(api_token=TOKEN, api_url="http://127.0.0.1:9/api/", connect_timeout=0.2)
    with Transport(closed) as client:
        attempt(client, single())

    assert len(errors) >= 10
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
    assert caplog.records
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(record.args) for record in caplog.records)
