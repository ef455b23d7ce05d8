"""SteeringStore on a real Redis: a send's waiting parts end unsent, each with its status."""

from __future__ import annotations

import time

import pytest
import redis

from mailqueue.core.envelope import Envelope, envelopes_for
from mailqueue.core.payload import prepare
from mailqueue.settings import Settings
from mailqueue.store.status import now_iso
from mailqueue.store.stores import Stores

LATER = 4_000_000_000.0


@pytest.fixture
def stores(redis_client: redis.Redis) -> Stores:
    return Stores.over(redis_client, Settings())


def queue_for_later(stores: Stores, send_id: str, recipients: int) -> list[Envelope]:
    message = {
        "from_email": "shop@example.com",
        "to": [f"r{i}@example.com" for i in range(recipients)],
        "merge_data": {f"r{i}@example.com": {} for i in range(recipients)},
        "subject": "Hi",
        "text": "Hello",
    }
    envelopes = envelopes_for(prepare(message), send_id=send_id)
    with stores.redis.pipeline() as pipe:
        stores.store.create(pipe, send_id, parts=len(envelopes), created_at=now_iso())
        for envelope in envelopes:
            stores.outbox.schedule(pipe, envelope, LATER)
        pipe.execute()
    return envelopes


def test_ending_a_sends_waiting_parts_cancels_each_and_reports_the_last(stores: Stores) -> None:
    _, second = queue_for_later(stores, "s1", 501)

    finished = stores.steering.end_waiting("s1")

    assert finished == [second]  # its ending made the send final
    record = stores.store.get("s1")
    assert record is not None and record["state"] == "cancelled"
    assert stores.outbox.waiting_parts("s1") == []
    assert stores.redis.zcard(stores.keys.retry) == 0


def test_a_part_already_back_in_its_stream_is_left_to_its_worker(stores: Stores) -> None:
    first, _ = queue_for_later(stores, "s1", 501)
    stores.redis.zadd(stores.keys.retry, {"s1|0": time.time() - 1})
    assert stores.outbox.move_due() == 1

    assert stores.steering.end_waiting("s1") == []  # part 1 ended; part 0 is not done yet

    record = stores.store.get("s1")
    assert record is not None and record["state"] == "sending"  # one part ended, one to go
    assert stores.outbox.waiting_parts("s1") == []
    [back] = stores.outbox.read("worker-1", stores.outbox.stream_for(first), 10)
    assert (back.send_id, back.part) == ("s1", 0)


def test_a_send_with_nothing_waiting_ends_nothing(stores: Stores) -> None:
    assert stores.steering.end_waiting("nobody") == []
