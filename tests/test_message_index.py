"""The indexes on a real Redis: message ids in compact shared hashes, an address's recent sends."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace
from typing import Any, cast

import redis

from mailqueue.core.payload import ApiCall
from mailqueue.store.keys import Keys
from mailqueue.store.message_index import (
    KEPT_PER_ADDRESS,
    IndexEntry,
    MessageIndex,
    decode_entry,
    encode_entry,
    note_send,
    pack_id,
    recent_sends,
)
from mailqueue.store.status import StatusStore

TTL = 600


def index(client: redis.Redis) -> MessageIndex:
    return MessageIndex(client, Keys(), ttl=TTL)


def add(client: redis.Redis, message_id: str, send_id: str, *recipients: str, now: float) -> None:
    with client.pipeline() as pipe:
        index(client).add(pipe, message_id, send_id, recipients, now)
        pipe.execute()


def test_an_entry_written_in_the_previous_generation_is_still_found(
    redis_client: redis.Redis,
) -> None:
    add(redis_client, "m1", "s1", "a@example.com", now=time.time() - TTL)

    assert index(redis_client).look_up(["m1"]) == {"m1": IndexEntry("s1", ("a@example.com",))}


def test_an_entry_two_generations_old_has_expired_with_its_bucket(
    redis_client: redis.Redis,
) -> None:
    add(redis_client, "m1", "s1", "a@example.com", now=time.time() - 2 * TTL)

    assert redis_client.keys("{mq}:msgidx:*") == []
    assert index(redis_client).look_up(["m1"]) == {}


def test_an_entry_of_the_one_key_per_id_format_is_still_read(redis_client: redis.Redis) -> None:
    value = {"send": "s1", "recipients": ["a@example.com"], "campaign": "spring"}
    redis_client.set(Keys().message_index("m1"), json.dumps(value))

    assert index(redis_client).look_up(["m1", "m2"]) == {
        "m1": IndexEntry("s1", ("a@example.com",), "spring")
    }
    assert index(redis_client).known(["m2", "m1"]) == [False, True]


def test_a_bucket_of_short_entries_is_a_listpack(redis_client: redis.Redis) -> None:
    now = time.time()
    for n in range(2000):
        add(redis_client, f"m{n}", "csv-0123456789abcdef0123456789abcdef", f"r{n}@example.com",
            now=now)  # fmt: skip

    buckets = redis_client.keys("{mq}:msgidx:*")
    assert {redis_client.object("encoding", key) for key in buckets} == {b"listpack"}


def test_several_recipients_of_one_message_id_round_trip() -> None:
    raw = encode_entry("s1", ["a@example.com", "b@example.com"])

    assert decode_entry(raw) == IndexEntry("s1", ("a@example.com", "b@example.com"))
    assert decode_entry("s1") is None
    assert decode_entry("bad id\x1fa@example.com") is None


def test_uuids_and_hex_send_ids_are_stored_as_their_bytes_and_read_back(
    redis_client: redis.Redis,
) -> None:
    message_id, send_id = str(uuid.uuid4()), uuid.uuid4().hex
    add(redis_client, message_id, send_id, "a@example.com", now=time.time())

    (bucket,) = redis_client.keys("{mq}:msgidx:*")
    ((field, value),) = redis_client.hgetall(bucket).items()
    assert (len(field), len(value)) == (17, 17 + 1 + len("a@example.com"))
    assert index(redis_client).look_up([message_id]) == {
        message_id: IndexEntry(send_id, ("a@example.com",))
    }
    # An id that only looks like one (upper case) is stored as it is.
    assert pack_id(message_id.upper()) == message_id.upper().encode()


def test_entries_indexed_together_are_stored_as_each_alone_would_be(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    send_id = uuid.uuid4().hex
    entries: list[tuple[str, tuple[str, ...]]] = [
        (str(uuid.uuid4()), (f"r{n}@example.com",)) for n in range(50)
    ]
    entries.append(("plain-id", ("a@example.com", "b@example.com")))
    with redis_client.pipeline() as pipe:
        for message_id, recipients in entries:
            index(redis_client).add(pipe, message_id, send_id, recipients, now)
        pipe.execute()
    alone = {
        key: (redis_client.hgetall(key), redis_client.expiretime(key.decode()))
        for key in cast(list[bytes], redis_client.keys("*msgidx*"))
    }
    redis_client.flushdb()

    with redis_client.pipeline() as pipe:
        index(redis_client).add_all(pipe, send_id, entries, now)
        pipe.execute()
    together = {
        key: (redis_client.hgetall(key), redis_client.expiretime(key.decode()))
        for key in cast(list[bytes], redis_client.keys("*msgidx*"))
    }

    assert together == alone and len(alone) > 1
    found = index(redis_client).look_up([message_id for message_id, _ in entries])
    assert found == {m: IndexEntry(send_id, tuple(r)) for m, r in entries}


# -- an address's recent sends ------------------------------------------------------------


def status_store(client: redis.Redis) -> StatusStore:
    return StatusStore(client, Keys(), ttl=TTL, message_index=index(client))


def note(client: redis.Redis, send_id: str, *recipients: str) -> None:
    call = cast(ApiCall, SimpleNamespace(recipients=[list(recipients)]))
    with client.pipeline() as pipe:
        note_send(pipe, send_id, [call], campaign=None, status=status_store(client))
        pipe.execute()


def test_an_address_notes_its_sends_scored_by_whole_microseconds(
    redis_client: redis.Redis,
) -> None:
    before = int(time.time() * 1_000_000)
    note(redis_client, "s1", "Alice@Example.com")

    entries: Any = redis_client.zrange(
        Keys().address_sends("alice@example.com"), 0, -1, withscores=True
    )
    [(member, score)] = entries
    assert member == b"s1"
    assert score == int(score) and before <= score <= time.time() * 1_000_000
    assert redis_client.object("encoding", Keys().address_sends("alice@example.com")) == b"listpack"


def test_entries_scored_in_seconds_before_are_read_with_the_new_newest_first(
    redis_client: redis.Redis,
) -> None:
    key = Keys().address_sends("alice@example.com")
    now = time.time()
    # As earlier versions wrote them: seconds, fractional; one older than the TTL.
    redis_client.zadd(key, {"old": now - 60.5, "older": now - 120.25, "gone": now - TTL - 5})
    note(redis_client, "new", "alice@example.com")
    redis_client.zadd(key, {"forgotten": int((now - TTL - 5) * 1_000_000)})

    assert recent_sends("Alice@example.com ", status=status_store(redis_client)) == [
        "new",
        "old",
        "older",
    ]


def test_an_address_keeps_its_newest_sends_only(redis_client: redis.Redis) -> None:
    for number in range(KEPT_PER_ADDRESS + 5):
        note(redis_client, f"s{number}", "alice@example.com")

    found = recent_sends("alice@example.com", status=status_store(redis_client))

    assert len(found) == KEPT_PER_ADDRESS
    assert found[-1] == "s5"
