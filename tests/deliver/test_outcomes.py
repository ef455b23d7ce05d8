"""The outcome stage: answers recorded and acknowledged together; the retry budget (Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.envelope import Envelope
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.drain import Drainer
from mailqueue.deliver.outcomes import DrainReport, part_result, worker_lost
from mailqueue.errors import PermanentDeliveryError, RateLimited, TransientDeliveryError
from mailqueue.settings import Settings
from mailqueue.store.keys import OUTBOX_GROUP


def message(*recipients: str, **extra: Any) -> dict[str, Any]:
    base = {"from_email": "shop@example.com", "to": list(recipients), "subject": "S", "text": "T"}
    return base | extra


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    settings = Settings(
        broker_url=redis_url, api_token="t", max_retries=2, retry_backoff=10, retry_backoff_max=60
    )
    client = Client(settings, publish=lambda options: None)
    yield client
    client.close()


def claimed(client: Client, *recipients: str, **extra: Any) -> tuple[str, Envelope]:
    send_id = client.enqueue(message(*recipients, **extra))
    envelopes = client.outbox.read("worker-1", client.keys.outbox, 10)
    (envelope,) = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport()).ready
    return send_id, envelope


def pending(client: Client) -> int:
    return int(client.redis.xpending(client.keys.outbox, OUTBOX_GROUP)["pending"])


def test_all_requests_accepted_is_sent() -> None:
    result = part_result([RequestResult({"a@x.io": "m1"}), RequestResult({"b@x.io": "m2"})])

    assert (result.outcome, result.error) == ("sent", None)
    assert result.recipients == {"a@x.io": "m1", "b@x.io": "m2"}


def test_some_requests_refused_is_partial_and_all_refused_is_failed() -> None:
    refused = RequestResult({"b@x.io": None}, error="invalid address")

    partial = part_result([RequestResult({"a@x.io": "m1"}), refused])
    failed = part_result([refused, RequestResult({"c@x.io": None}, error="")])

    assert partial.outcome == "partial"
    assert partial.error is not None and partial.error["message"] == "invalid address"
    assert failed.outcome == "failed"
    assert failed.error is not None and failed.error["message"] == "invalid address; rejected"


def test_a_lost_worker_is_a_transient_error_that_may_have_delivered() -> None:
    error = worker_lost()

    assert isinstance(error, TransientDeliveryError) and error.maybe_delivered


def test_an_answer_is_recorded_and_its_entry_acknowledged_together(client: Client) -> None:
    send_id, envelope = claimed(client, "a@example.com")
    report = DrainReport()

    Drainer(client.drain_parts).outcomes.record(
        [envelope], envelope.call, [RequestResult({"a@example.com": "m-1"})], report
    )

    record = client.get_status(send_id)
    assert record is not None and record["state"] == "sent"
    assert record["recipients"]["a@example.com"]["message_id"] == "m-1"
    assert (report.sent, report.failed) == (1, 0)
    assert pending(client) == 0


def test_a_coalesced_calls_request_i_is_envelope_is_part(client: Client) -> None:
    first, a = claimed(client, "a@example.com")
    second, b = claimed(client, "b@example.com")
    results = [
        RequestResult({"a@example.com": "m-a"}),
        RequestResult({"b@example.com": None}, error="invalid"),
    ]

    Drainer(client.drain_parts).outcomes.record([a, b], a.call, results, DrainReport())

    assert client.store.state(first) == "sent"
    assert client.store.state(second) == "failed"


def test_a_permanent_failure_ends_every_part_failed_and_keeps_dead_letters(
    client: Client,
) -> None:
    send_id, envelope = claimed(client, "a@example.com")
    report = DrainReport()

    Drainer(client.drain_parts).outcomes.fail(
        [envelope], PermanentDeliveryError("refused", status_code=401, path="send"), report
    )

    record = client.get_status(send_id)
    assert record is not None and record["state"] == "failed"
    assert record["error"] is not None and record["error"]["status_code"] == 401
    assert [sid for sid, _ in client.outbox.dead_letters()] == [send_id]
    assert report.failed == 1


def test_each_try_spends_one_of_max_retries_plus_one(client: Client) -> None:
    _, envelope = claimed(client, "a@example.com")
    outcomes = Drainer(client.drain_parts).outcomes
    error = TransientDeliveryError("unavailable", status_code=503, path="send")

    answers = [outcomes.spend(envelope, error) for _ in range(3)]

    assert answers == [True, True, False]
    assert outcomes.tries_left(envelope) == 0 and outcomes.spent(envelope)
    assert envelope.last_error is not None and envelope.last_error["status_code"] == 503


def test_a_retry_waits_its_backoff_and_at_least_retry_after(client: Client) -> None:
    _, envelope = claimed(client, "a@example.com")
    before = time.time()

    Drainer(client.drain_parts).outcomes.spend(
        envelope, RateLimited("slow down", status_code=429), retry_after=30
    )

    assert envelope.resend_at is not None and envelope.resend_at >= before + 30


def test_a_retry_is_never_due_after_the_send_expires(client: Client) -> None:
    _, envelope = claimed(client, "a@example.com")
    envelope.expires_at = time.time() + 1

    Drainer(client.drain_parts).outcomes.spend(
        envelope, TransientDeliveryError("x", status_code=503)
    )

    assert envelope.resend_at is not None and envelope.resend_at <= envelope.expires_at


def test_retry_later_schedules_the_part_with_its_error_recorded(client: Client) -> None:
    send_id, envelope = claimed(client, "a@example.com")
    report = DrainReport()

    Drainer(client.drain_parts).outcomes.retry_later(
        [envelope], TransientDeliveryError("unavailable", status_code=503, path="send"), report
    )

    record = client.get_status(send_id)
    assert record is not None and record["state"] == "retrying"
    assert report.retried == 1 and pending(client) == 0
    assert client.outbox.next_retry_due() is not None


def test_retry_later_fails_a_part_with_no_try_left(client: Client) -> None:
    send_id, envelope = claimed(client, "a@example.com")
    envelope.attempt = client.settings.max_retries

    Drainer(client.drain_parts).outcomes.retry_later(
        [envelope], TransientDeliveryError("unavailable", status_code=503), DrainReport()
    )

    assert client.store.state(send_id) == "failed"
    assert client.outbox.next_retry_due() is None
