"""The worker renders each queued call with its own settings; older envelopes still send."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

import mailqueue
from mailqueue.client import default
from mailqueue.core.rules import merge_request
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.store.status import now_iso
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import wait_final

pytestmark = pytest.mark.e2e

PRODUCER_FROM = "Producer <producer@example.com>"
WORKER_FROM = "Worker <worker@example.com>"


def lone(index: int) -> dict[str, Any]:
    """A single send naming no sender, with what the renderer has to carry over."""
    return {
        "to": [f"Customer {index} <customer{index}@example.com>"],
        "cc": ["copies@example.com"],
        "reply_to": ["help@example.com"],
        "subject": f"Order {index}",
        "text": "It ships today.",
        "html": "<p>It ships today.</p>",
        "headers": {"X-Order": str(index)},
        "metadata": {"order": index},
        "tags": ["orders"],
        "attachments": [{"filename": "a.txt", "content": "aGVsbG8=", "mimetype": "text/plain"}],
    }


MERGE = {
    "to": ["ann@example.com", "bob@example.com", "cy@example.com"],
    "subject": "Hello {{name}}",
    "text": "Hi {{name}}",
    "merge_data": {"ann@example.com": {"name": "Ann"}, "bob@example.com": {"name": "Bob"}},
    "merge_metadata": {"cy@example.com": {"who": "cy"}},
}


def sent_bodies(mailtrap: LocalMailtrap) -> dict[str, dict[str, Any]]:
    """What the stand-in received, by recipient: a batch item merged with its base."""
    return {message.recipients[0]: message.payload for message in mailtrap.accepted}


def expected_bodies(message: dict[str, Any], settings: Settings) -> dict[str, dict[str, Any]]:
    """``build_payload(message, settings)``, by the first recipient of each request."""
    [call] = mailqueue.build_payload(message, settings)
    if not call.is_batch:
        return {call.recipients[0][0]: call.json}
    base = call.json["base"]
    return {
        group[0]: merge_request(base, request)
        for group, request in zip(call.recipients, call.json["requests"], strict=True)
    }


@pytest.fixture
def worker_settings(make_settings: Callable[..., Settings]) -> Settings:
    """The worker's settings; the producer (this process) is configured after, differently."""
    worker = make_settings(default_from_email=WORKER_FROM, reconcile=False)
    make_settings(default_from_email=PRODUCER_FROM, reconcile=False)
    return worker


@pytest.mark.parametrize("coalesce", [True, False])
def test_the_call_is_the_payload_built_with_the_workers_settings(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, coalesce: bool
) -> None:
    worker_settings = make_settings(
        default_from_email=WORKER_FROM, reconcile=False, coalesce=coalesce
    )
    make_settings(default_from_email=PRODUCER_FROM, reconcile=False, coalesce=coalesce)
    messages = [lone(1), lone(2), MERGE]
    # Queued while no worker runs: the lone sends wait together (one coalesced call).
    ids = [mailqueue.enqueue(message) for message in messages]

    with WorkerProcess(worker_settings, concurrency=2) as worker:
        try:
            records = wait_final(ids)
        except AssertionError:
            print(worker.output())
            raise

    assert {record["state"] for record in records.values()} == {"sent"}
    expected: dict[str, dict[str, Any]] = {}
    for message in messages:
        expected.update(expected_bodies(message, worker_settings))
    assert sent_bodies(mailtrap) == expected
    senders = {body["from"]["email"] for body in sent_bodies(mailtrap).values()}
    assert senders == {"worker@example.com"}
    calls = {"/api/batch": 2} if coalesce else {"/api/send": 2, "/api/batch": 1}
    assert mailtrap.stats.by_path == calls


def test_an_envelope_queued_with_a_rendered_body_still_sends_unchanged(
    worker_settings: Settings, mailtrap: LocalMailtrap, redis_client: redis.Redis
) -> None:
    body = {
        "from": {"email": "legacy@example.com", "name": "Legacy"},
        "to": [{"email": "old@example.com"}],
        "subject": "Queued before workers rendered",
        "text": "Still on its way.",
    }
    send_id = "legacy-send-1"
    # As the earlier producer wrote it: the status record, then the envelope
    # carrying the body it rendered (no format marker) in the transactional stream.
    with redis_client.pipeline(transaction=True) as pipe:
        default().store.create(pipe, send_id, parts=1, created_at=now_iso())
        envelope = {
            "id": send_id,
            "part": 0,
            "kind": "send",
            "body": body,
            "rcpt": [["old@example.com"]],
            "attempt": 0,
        }
        keys = Keys(worker_settings.key_prefix)
        pipe.xadd(keys.outbox, {"e": json.dumps(envelope, separators=(",", ":"))})
        pipe.execute()
    new_id = mailqueue.enqueue(lone(3))

    with WorkerProcess(worker_settings, concurrency=2) as worker:
        try:
            records = wait_final([send_id, new_id])
        except AssertionError:
            print(worker.output())
            raise

    assert records[send_id]["state"] == "sent"
    assert records[new_id]["state"] == "sent"
    bodies = sent_bodies(mailtrap)
    assert bodies["old@example.com"] == body
    assert bodies["customer3@example.com"]["from"]["email"] == "worker@example.com"
