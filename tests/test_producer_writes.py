"""Producer writes go through the stores, listing each campaign stream once per transaction."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import mailqueue
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.store.outbox import Envelope


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    settings = Settings(broker_url=redis_url, api_token="tok")
    mailqueue.configure(settings)
    yield settings


def message(index: int) -> dict[str, Any]:
    return {
        "from_email": "shop@example.com",
        "to": [f"c{index}@example.com"],
        "subject": f"Order {index}",
        "text": "Thanks",
    }


def calls_of(client: redis.Redis, command: str) -> int:
    stats: Any = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_campaign_of_many_sends_is_listed_for_the_drains_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    redis_client.config_resetstat()

    ids = mailqueue.enqueue_many([message(i) for i in range(50)], campaign="spring")

    keys = Keys()
    names: Any = redis_client.zrange(keys.outbox_campaigns, 0, -1)
    [stream] = [name.decode() for name in names]
    entries: Any = redis_client.xrange(stream)
    sent_ids = [Envelope.decode(fields[b"e"]).send_id for _, fields in entries]
    assert sent_ids == list(ids)
    assert calls_of(redis_client, "xadd") == 50
    # One ZADD lists the campaign's stream for the drains, one the campaign itself.
    assert calls_of(redis_client, "zadd") == 2


def test_a_scheduled_send_is_held_with_one_write_for_its_parts(
    settings: Settings, redis_client: redis.Redis
) -> None:
    to = [f"r{i}@example.com" for i in range(1200)]
    batch = {**message(0), "to": to, "merge_data": {}, "send_at": time.time() + 3600}
    redis_client.config_resetstat()

    send_id = mailqueue.enqueue(batch)

    keys = Keys()
    held: Any = redis_client.hgetall(keys.retry_parts(send_id))
    assert sorted(Envelope.decode(raw).part for raw in held.values()) == [0, 1, 2]
    assert redis_client.zcard(keys.retry) == 3
    assert redis_client.zscore(keys.scheduled, send_id) is not None
    # One ZADD names the three parts, one lists the send with the scheduled ones.
    assert calls_of(redis_client, "zadd") == 2
