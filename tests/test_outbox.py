"""The outbox's retry set on a real Redis: parts waiting by name, found by send and campaign,
moved when due (and as earlier versions scheduled them), requeued, counted."""

from __future__ import annotations

import json
import time

import pytest
import redis

from mailqueue.core.envelope import Envelope, envelopes_for
from mailqueue.core.payload import prepare
from mailqueue.store.keys import Keys
from mailqueue.store.outbox import Outbox

KEYS = Keys()
LATER = 4_000_000_000.0  # a due time far ahead


@pytest.fixture
def outbox(redis_client: redis.Redis) -> Outbox:
    box = Outbox(redis_client, KEYS, reclaim_idle=60, ttl=60)
    box.ensure_group()
    return box


def parts(send_id: str, count: int = 1, campaign: str | None = None) -> list[Envelope]:
    """A send of ``count`` parts (a batch send of 500 recipients a part past the first)."""
    message: dict[str, object] = {
        "from_email": "shop@example.com",
        "subject": "Hi",
        "text": "Hello",
        # A body that names another send and the campaign, as a customer's metadata may.
        "metadata": {"id": "other", "campaign": "spring"},
    }
    if count == 1:
        message["to"] = ["alice@example.com"]
    else:
        message["to"] = [f"r{i}@example.com" for i in range(500 * (count - 1) + 1)]
        message["merge_data"] = {f"r{i}@example.com": {} for i in range(500 * (count - 1) + 1)}
    built = envelopes_for(prepare(message), send_id=send_id, campaign=campaign)
    assert len(built) == count
    return built


def schedule(client: redis.Redis, outbox: Outbox, envelopes: list[Envelope], due: float) -> None:
    with client.pipeline() as pipe:
        for envelope in envelopes:
            outbox.schedule(pipe, envelope, due)
        pipe.execute()


def due_of(client: redis.Redis, send_id: str, part: int) -> float | None:
    return client.zscore(KEYS.retry, f"{send_id}|{part}")


def test_a_sends_waiting_parts_are_found_by_its_id(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    schedule(redis_client, outbox, parts("s1", 2), LATER)
    schedule(redis_client, outbox, parts("other"), LATER)

    found = outbox.waiting_parts("s1")

    assert [(e.send_id, e.part) for e in found] == [("s1", 0), ("s1", 1)]
    assert found == parts("s1", 2)
    assert outbox.waiting_parts("nobody") == []


def test_a_part_moved_back_to_its_stream_is_no_longer_waiting(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    schedule(redis_client, outbox, parts("s1"), time.time() - 1)

    assert outbox.move_due() == 1
    assert outbox.waiting_parts("s1") == []
    assert not redis_client.exists(KEYS.retry_parts("s1"))
    [moved] = outbox.read("worker-1", KEYS.outbox, 10)
    assert (moved.send_id, moved.part) == ("s1", 0)


def test_a_taken_part_leaves_the_set_and_its_hash(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    first, second = parts("s1", 2)
    schedule(redis_client, outbox, [first, second], LATER)

    with redis_client.pipeline() as pipe:
        outbox.take_waiting(pipe, first)
        pipe.execute()

    assert outbox.waiting_parts("s1") == [second]
    assert due_of(redis_client, "s1", 0) is None


def test_moving_a_sends_waiting_parts_changes_only_theirs(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    schedule(redis_client, outbox, parts("s1", 2), LATER)
    schedule(redis_client, outbox, parts("other"), LATER)

    assert outbox.move_waiting(["s1"], 1000.0) == 2

    assert due_of(redis_client, "s1", 0) == due_of(redis_client, "s1", 1) == 1000.0
    assert due_of(redis_client, "other", 0) == LATER
    assert outbox.move_waiting([], 1000.0) == 0


def test_moving_never_puts_back_a_part_that_left_the_set(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    schedule(redis_client, outbox, parts("s1"), time.time() - 1)
    # Read the part names first, as a steering call racing a worker would.
    redis_client.zrem(KEYS.retry, "s1|0")

    assert outbox.move_waiting(["s1"], LATER) == 0
    assert redis_client.zcard(KEYS.retry) == 0


def test_a_campaigns_waiting_sends_are_listed_by_name(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    schedule(redis_client, outbox, parts("s1", campaign="spring"), LATER)
    schedule(redis_client, outbox, parts("s2", 2, campaign="spring"), LATER)
    # Its body says "campaign":"spring", but it belongs to none.
    schedule(redis_client, outbox, parts("lone"), LATER)

    assert outbox.campaign_waiting("spring") == ["s1", "s2"]
    assert outbox.campaign_waiting("autumn") == []
    # The list outlives the latest part it names.
    assert redis_client.ttl(KEYS.campaign_retries("spring")) > LATER - time.time()


def test_a_retry_scheduled_as_a_whole_envelope_is_still_moved_when_due(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    [earlier] = parts("s1")
    redis_client.zadd(KEYS.retry, {earlier.encode(): time.time() - 1})
    schedule(redis_client, outbox, parts("s2"), time.time() - 1)

    assert outbox.move_due() == 2
    moved = outbox.read("worker-1", KEYS.outbox, 10)
    assert sorted(e.send_id for e in moved) == ["s1", "s2"]
    assert redis_client.zcard(KEYS.retry) == 0


def test_a_name_whose_envelope_is_gone_is_dropped_not_moved(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    schedule(redis_client, outbox, parts("s1"), time.time() - 1)
    redis_client.delete(KEYS.retry_parts("s1"))

    assert outbox.move_due() == 0
    assert redis_client.zcard(KEYS.retry) == 0
    assert outbox.read("worker-1", KEYS.outbox, 10) == []


def test_a_part_scheduled_again_waits_once_with_its_latest_envelope(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    [envelope] = parts("s1")
    schedule(redis_client, outbox, [envelope], LATER)
    envelope.attempt = 2
    schedule(redis_client, outbox, [envelope], time.time() - 1)

    assert outbox.move_due() == 1
    [moved] = outbox.read("worker-1", KEYS.outbox, 10)
    assert moved.attempt == 2


def test_add_all_puts_every_envelope_in_its_stream(outbox: Outbox) -> None:
    lone, (first, second) = parts("s1"), parts("s2", 2)
    outbox.add_all([*lone, first, second])

    single = outbox.read("worker-1", KEYS.outbox, 10)
    assert [e.send_id for e in single] == ["s1"]
    # A send of several parts waits in the bulk lane, in a stream of its own.
    stream = outbox.stream_for(first)
    assert stream != KEYS.outbox
    found = outbox.read("worker-1", stream, 10)
    assert [(e.send_id, e.part) for e in found] == [("s2", 0), ("s2", 1)]


def test_depths_count_the_streams_the_retry_set_and_the_dead_letters(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    outbox.add_all([*parts("s1"), *parts("s2")])
    schedule(redis_client, outbox, parts("s3", 2), LATER)
    with redis_client.pipeline() as pipe:
        outbox.bury(pipe, parts("s4")[0], time.time())
        pipe.execute()

    assert outbox.depths() == {"outbox": 2, "batch": 0, "retry": 2, "dead": 1}


def test_waiting_envelopes_are_kept_as_encoded(redis_client: redis.Redis, outbox: Outbox) -> None:
    [envelope] = parts("s1")
    schedule(redis_client, outbox, [envelope], LATER)

    stored = redis_client.hget(KEYS.retry_parts("s1"), "0")
    assert stored is not None
    assert json.loads(stored) == json.loads(envelope.encode())
