"""The settling stage: a doubtful part is looked up, or sent again counted a possible duplicate.

Over a real Redis, the in-memory transport for the calls sent again, and real
HTTP for the Email Logs look-up that cannot be answered. Parts that the logs
show are proven against the local Mailtrap in test_reconcile_drain.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.envelope import Envelope
from mailqueue.deliver.drain import Drainer
from mailqueue.deliver.outcomes import DrainReport
from mailqueue.settings import Settings
from mailqueue.testing import MemoryTransport

MESSAGE = {"from_email": "shop@example.com", "to": ["a@example.com"], "subject": "S", "text": "T"}


def make(redis_url: str, **overrides: Any) -> Client:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        max_retries=2,
        # Port 1 of the loopback refuses at once: Email Logs cannot answer.
        general_api_url="http://127.0.0.1:1/",
        allow_http_api_urls=True,
        **overrides,
    )
    return Client(settings, publish=lambda options: None)


@pytest.fixture
def reconciling(redis_url: str) -> Iterator[Client]:
    client = make(redis_url, reconcile=True)
    yield client
    client.close()


def doubtful(client: Client) -> tuple[str, Envelope]:
    """A queued send read and claimed, as a part whose last answer was lost comes back."""
    send_id = client.enqueue(MESSAGE)
    (envelope,) = client.outbox.read("worker-1", client.keys.outbox, 10)
    (envelope,) = Drainer(client.drain_parts).claims.claim([envelope], DrainReport()).ready
    envelope.attempt = 1  # the lost call spent a try
    return send_id, envelope


def settle(client: Client, envelope: Envelope) -> tuple[MemoryTransport, DrainReport]:
    transport = MemoryTransport()
    drainer = Drainer(client.drain_parts, transport)
    report = DrainReport()
    try:
        drainer.settler.settle([envelope], report)
    finally:
        drainer.close()
    return transport, report


def test_when_email_logs_cannot_answer_the_part_is_sent_again_as_a_fallback(
    reconciling: Client,
) -> None:
    send_id, envelope = doubtful(reconciling)

    transport, _ = settle(reconciling, envelope)

    record = reconciling.get_status(send_id)
    assert transport.paths() == ["send"]
    assert record is not None and record["state"] == "sent"
    assert record["possible_duplicates"] == 1
    assert record.get("reconcile_fallbacks") == 1


def test_a_sandbox_keeps_no_email_logs_so_its_part_is_sent_again_without_a_look(
    redis_url: str,
) -> None:
    client = make(redis_url, reconcile=True, sandbox_id="7")
    try:
        send_id, envelope = doubtful(client)

        transport, _ = settle(client, envelope)

        record = client.get_status(send_id)
        assert transport.paths() == ["send/7"]
        assert record is not None and record["possible_duplicates"] == 1
        assert not record.get("reconcile_fallbacks")
    finally:
        client.close()


def test_a_part_with_no_try_left_ends_failed_and_is_listed_for_reconcile(
    reconciling: Client,
) -> None:
    send_id, envelope = doubtful(reconciling)
    envelope.attempt = reconciling.settings.max_retries + 1

    transport, report = settle(reconciling, envelope)

    assert transport.calls == []
    assert reconciling.store.state(send_id) == "failed"
    assert report.failed == 1
    assert send_id in reconciling.store.doubtful_sends()


def test_a_part_whose_backoff_has_not_run_out_waits_for_it(reconciling: Client) -> None:
    send_id, envelope = doubtful(reconciling)
    envelope.resend_at = time.time() + 3600

    transport, report = settle(reconciling, envelope)

    record = reconciling.get_status(send_id)
    assert transport.calls == []
    assert report.retried == 1
    assert record is not None and record["state"] == "retrying"
    assert reconciling.outbox.next_retry_due() == pytest.approx(envelope.resend_at, abs=1.0)
