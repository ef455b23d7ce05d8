"""Campaigns: a large merge-data send goes in chunks of 500, and bulk enqueues stay cheap."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest
import redis

import mailqueue
from mailqueue.client import Client
from mailqueue.client import default as current
from mailqueue.produce.producer import PIPELINE_CHUNK
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e

TEMPLATE = "7f1b6a36-0000-4000-8000-00000000ca11"


class CountingConnection(redis.Connection):
    """Counts what it sends: one write is one round trip, pipelined or not."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def campaign(recipients: Sequence[str]) -> dict[str, Any]:
    return {
        "from_email": "News <news@example.com>",
        "to": list(recipients),
        "template_id": TEMPLATE,
        "merge_global_data": {"issue": "42"},
        "merge_data": {address: {"n": str(i)} for i, address in enumerate(recipients)},
    }


def newsletter(index: int) -> dict[str, Any]:
    return {
        "from_email": "News <news@example.com>",
        "to": [f"reader{index}@example.com"],
        "subject": f"Issue 42 for reader {index}",
        "text": "This week's news.",
    }


def test_a_merge_data_campaign_goes_in_chunks_of_500_and_every_recipient_is_counted(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    recipients = [f"reader{i}@example.com" for i in range(2_300)]

    send_id = mailqueue.enqueue(campaign(recipients))
    record = wait_final([send_id], timeout=60)[send_id]

    assert record["state"] == "sent"
    assert record["parts"] == 5
    assert mailtrap.stats.by_path == {"/api/batch": 5}
    assert current().store.recipient_counts(send_id) == {"queued": 2_300}
    values = sorted(int(m.payload["template_variables"]["n"]) for m in mailtrap.accepted)
    assert values == list(range(2_300))


def test_a_campaign_with_refused_recipients_counts_them_as_failed(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    recipients = [f"reader{i}@example.com" for i in range(1_200)]
    recipients[10] = "gone@nowhere.invalid"
    recipients[700] = "left@nowhere.invalid"

    send_id = mailqueue.enqueue(campaign(recipients))
    record = wait_final([send_id], timeout=60)[send_id]

    assert record["state"] == "partially_sent"
    assert current().store.recipient_counts(send_id) == {"queued": 1_198, "failed": 2}


def test_enqueue_many_group_counts_follow_the_campaign_to_its_end(
    mailtrap: LocalMailtrap, settings: Settings
) -> None:
    messages = [newsletter(i) for i in range(2_000)]
    messages[5]["to"] = ["gone@nowhere.invalid"]

    ids = mailqueue.enqueue_many(messages)
    first = mailqueue.get_status(ids[0])
    assert first is not None
    group = first["group"]
    queued = current().store.group_counts(group)
    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        records = wait_final(ids, timeout=60)

    assert queued == {"queued": 2_000}
    assert current().store.group_counts(group) == {"sent": 1_999, "failed": 1}
    assert sum(r["state"] == "sent" for r in records.values()) == 1_999
    assert len(mailtrap.accepted) == 1_999


def test_enqueue_many_writes_in_a_few_pipelined_round_trips(
    settings: Settings, redis_url: str
) -> None:
    runtime = Client(settings)
    runtime.__dict__["redis"] = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    messages = [newsletter(i) for i in range(3_000)]
    runtime.redis.ping()  # the connection handshake is not the producer's doing
    CountingConnection.writes = 0

    ids = runtime.enqueue_many(messages)

    assert len(ids) == 3_000
    chunks = math.ceil(3_000 / PIPELINE_CHUNK)
    # One transaction per chunk, plus one look at the running drains.
    assert CountingConnection.writes <= chunks + 1
    # A campaign waits in a stream of its own, in the bulk lane.
    queue = Keys().campaign_queue("transactional", "send", ids.group_id or "")
    assert runtime.redis.xlen(queue) == 3_000


def test_enqueue_many_holds_little_memory_per_message(settings: Settings) -> None:
    messages = [newsletter(i) for i in range(3_000)]
    mailqueue.enqueue_many(messages[:10])  # imports, connections and scripts first

    tracemalloc.start()
    try:
        mailqueue.enqueue_many(messages)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    print(f"\nenqueue_many peak: {peak / 3_000:,.0f} bytes per message")
    # The payloads are held until every one is validated; Redis commands are
    # buffered one chunk at a time, not for the whole campaign.
    assert peak / 3_000 < 8_000
