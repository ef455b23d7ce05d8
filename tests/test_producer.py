"""The producer API on a real Redis, with no worker running: what gets written, and what doesn't."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis

import mailqueue
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.store.outbox import Envelope
from mailqueue.testing.redis_server import free_port

MESSAGE = {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    settings = Settings(broker_url=redis_url, api_token="tok")
    mailqueue.configure(settings)
    yield settings


def outbox_envelopes(client: redis.Redis, stream: str = Keys().outbox) -> list[Envelope]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream))
    return [Envelope.decode(fields[b"e"]) for _, fields in entries]


def test_send_email_delay_returns_an_async_result_named_by_the_send_id(
    settings: Settings, redis_client: redis.Redis
) -> None:
    result = mailqueue.send_email.delay(MESSAGE)

    assert mailqueue.get_status(result.id)["state"] == "queued"  # type: ignore[index]
    [envelope] = outbox_envelopes(redis_client)
    assert envelope.send_id == result.id
    assert (envelope.kind, envelope.mail_stream) == ("send", "transactional")
    assert envelope.lane == "transactional"


def test_apply_async_takes_the_message_as_its_only_argument(settings: Settings) -> None:
    result = mailqueue.send_email.apply_async((MESSAGE,))

    assert mailqueue.get_status(result.id) is not None


def test_apply_async_with_countdown_schedules_instead_of_queueing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    before = time.time()
    mailqueue.send_email.apply_async((MESSAGE,), countdown=300)

    assert outbox_envelopes(redis_client) == []
    [(_, due)] = cast(
        list[tuple[bytes, float]], redis_client.zrange(Keys().retry, 0, -1, withscores=True)
    )
    assert before + 299 <= due <= time.time() + 301


def test_a_record_never_holds_the_body(settings: Settings, redis_client: redis.Redis) -> None:
    send_id = mailqueue.enqueue({**MESSAGE, "text": "SECRET-BODY-TEXT"})

    stored = redis_client.hgetall(Keys().send(send_id))

    assert not any(b"SECRET-BODY-TEXT" in value for value in stored.values())


def test_idempotency_key_returns_the_first_id_and_queues_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    first = mailqueue.enqueue(MESSAGE, idempotency_key="order-7")
    second = mailqueue.enqueue(MESSAGE, idempotency_key="order-7")

    assert first == second
    assert len(outbox_envelopes(redis_client)) == 1
    assert not any(b"order-7" in key for key in redis_client.keys("*"))


def test_enqueue_many_returns_ids_in_order_with_a_shared_group(settings: Settings) -> None:
    messages = [{**MESSAGE, "subject": f"n{i}"} for i in range(1200)]

    ids = mailqueue.enqueue_many(messages)

    assert len(ids) == len(set(ids)) == 1200
    first = mailqueue.get_status(ids[0])
    last = mailqueue.get_status(ids[-1])
    assert first is not None and last is not None and first["group"] == last["group"]
    runtime = mailqueue.client.default()
    assert runtime.store.group_counts(first["group"]) == {"queued": 1200}


def test_enqueue_many_with_one_bad_message_names_its_index_and_queues_nothing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    messages = [MESSAGE, MESSAGE, {**MESSAGE, "to": ["nope"]}, MESSAGE]

    with pytest.raises(mailqueue.ValidationError) as info:
        mailqueue.enqueue_many(messages)

    assert info.value.index == 2
    assert "messages[2]" in str(info.value)
    assert redis_client.keys("{mq}:send:*") == []
    assert not redis_client.exists(Keys().outbox) or redis_client.xlen(Keys().outbox) == 0


def test_a_batch_send_becomes_one_envelope_per_chunk(
    settings: Settings, redis_client: redis.Redis
) -> None:
    to = [f"u{i}@example.com" for i in range(1001)]
    send_id = mailqueue.enqueue({**MESSAGE, "to": to, "merge_data": {}})

    # A send of several calls is a campaign of its own, in the bulk lane.
    queue = Keys().campaign_queue("transactional", "batch", send_id)
    envelopes = outbox_envelopes(redis_client, queue)

    assert [e.part for e in envelopes] == [0, 1, 2]
    assert {(e.lane, e.lane_key) for e in envelopes} == {("bulk", send_id)}
    assert mailqueue.get_status(send_id)["parts"] == 3  # type: ignore[index]


def test_get_status_of_a_hostile_id_is_none(settings: Settings) -> None:
    for hostile in ("*", "../x", "a b", "x" * 500, "\n", ""):
        assert mailqueue.get_status(hostile) is None


@pytest.mark.timeout(60)  # a hang, not an error, would end here
def test_a_down_broker_raises_broker_unavailable() -> None:
    mailqueue.configure(Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", api_token="t"))

    with pytest.raises(mailqueue.BrokerUnavailable):
        mailqueue.enqueue(MESSAGE)


def test_a_burst_on_an_idle_fleet_publishes_one_wake_up(
    settings: Settings, redis_client: redis.Redis
) -> None:
    for _ in range(20):
        mailqueue.send_email.delay(MESSAGE)

    assert redis_client.llen(settings.queue) == 1


def test_no_wake_up_is_published_while_a_drain_runs(
    settings: Settings, redis_client: redis.Redis
) -> None:
    redis_client.zadd(Keys().drains, {"worker-a": int((time.time() + 30) * 1000)})

    mailqueue.enqueue(MESSAGE)

    assert redis_client.llen(settings.queue) == 0


def test_a_marker_left_while_drains_ran_does_not_outlive_them(
    settings: Settings, redis_client: redis.Redis
) -> None:
    from mailqueue.client import default
    from mailqueue.deliver.drain import Drainer

    redis_client.zadd(Keys().drains, {"worker-a": int((time.time() + 30) * 1000)})
    mailqueue.enqueue(MESSAGE)  # sets the marker, wakes nobody: worker-a will see it
    redis_client.zrem(Keys().drains, "worker-a")
    drainer = Drainer(default().drain_parts)
    redis_client.delete(Keys().outbox)  # nothing to send: the drain only starts and leaves
    drainer.drain(budget=1)

    mailqueue.enqueue(MESSAGE)

    assert redis_client.llen(settings.queue) == 1


def test_a_signature_of_send_email_validates_and_queues_the_same_way(settings: Settings) -> None:
    result = mailqueue.send_email.s(MESSAGE).delay()

    assert mailqueue.get_status(result.id)["state"] == "queued"  # type: ignore[index]
    with pytest.raises(mailqueue.ValidationError):
        mailqueue.send_email.s({**MESSAGE, "subject": 5}).delay()
