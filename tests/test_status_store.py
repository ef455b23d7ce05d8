"""StatusStore on a real Redis: records, leased claims, outcomes, retries, group counts."""

from __future__ import annotations

import json
import time
from typing import cast

import pytest
import redis

from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.store.message_index import IndexEntry
from mailqueue.store.status import (
    STATE_MINUTES_KEPT,
    PartRef,
    PartResult,
    StatusStore,
    now_iso,
)
from mailqueue.store.stores import Stores


@pytest.fixture
def store(redis_client: redis.Redis, redis_url: str) -> StatusStore:
    return Stores.over(redis_client, Settings(broker_url=redis_url, status_ttl=600)).store


def create(store: StatusStore, send_id: str, parts: int = 1, group: str | None = None) -> None:
    with store.redis.pipeline() as pipe:
        store.create(pipe, send_id, parts=parts, created_at="2026-01-01T00:00:00.000Z", group=group)
        pipe.execute()


def record(
    store: StatusStore, send_id: str, part: int, result: PartResult, group: str | None = None
) -> None:
    with store.redis.pipeline() as pipe:
        store.record(pipe, PartRef(send_id, part, group), result)
        pipe.execute()


def test_new_record_is_queued_with_ttl(store: StatusStore) -> None:
    create(store, "s1")

    status = store.get("s1")

    assert status is not None
    assert status["state"] == "queued"
    assert status["attempts"] == 0
    assert status["error"] is None
    assert status["recipients"] == {}
    assert 0 < store.redis.ttl(Keys().send("s1")) <= 600


def minute_key() -> str:
    return Keys().state_minute(str(int(time.time() // 60)))


def test_the_minute_counts_get_their_expiry_once_not_with_every_send(
    store: StatusStore,
) -> None:
    store.redis.config_resetstat()
    for number in range(10):
        create(store, f"s{number}")

    expires = int(store.redis.info("commandstats")["cmdstat_expire"]["calls"])
    # Ten records, and their minute once (twice if the minute turned meanwhile).
    assert expires in (11, 12)
    assert 0 < store.redis.ttl(minute_key()) <= STATE_MINUTES_KEPT


def test_after_a_failed_enqueue_the_next_one_gives_the_minute_its_expiry(
    store: StatusStore,
) -> None:
    with store.redis.pipeline() as pipe:
        store.create(pipe, "lost", parts=1, created_at="2026-01-01T00:00:00.000Z")
        pipe.reset()  # never sent, as when the transaction fails
    store.forget_minute_expiry()

    create(store, "s1")

    assert 0 < store.redis.ttl(minute_key()) <= STATE_MINUTES_KEPT


def test_unknown_id_has_no_record(store: StatusStore) -> None:
    assert store.get("nope") is None


def test_claim_moves_to_sending_and_counts_the_attempt(store: StatusStore) -> None:
    create(store, "s1")

    assert store.claim([PartRef("s1", 0)], lease_seconds=30) == ["go"]

    status = store.get("s1")
    assert status is not None and status["state"] == "sending" and status["attempts"] == 1


def test_a_claim_keeps_the_records_expiry_and_gives_one_to_a_record_it_makes(
    store: StatusStore,
) -> None:
    create(store, "s1")
    store.redis.expire(Keys().send("s1"), 100)

    assert store.claim([PartRef("s1", 0), PartRef("gone", 0)], lease_seconds=30) == ["go", "go"]

    # The record queued with the send keeps its expiry (its outcome renews it);
    # one the claim had to make (its own had expired) gets the status TTL.
    assert 0 < store.redis.ttl(Keys().send("s1")) <= 100
    assert 100 < store.redis.ttl(Keys().send("gone")) <= 600


def test_a_live_lease_refuses_a_second_claimer(store: StatusStore) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=30)

    assert store.claim([PartRef("s1", 0)], lease_seconds=30) == ["busy"]


def test_an_expired_lease_is_taken_over_and_counted_as_a_possible_duplicate(
    store: StatusStore,
) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=0.05)
    deadline = time.monotonic() + 10
    while (claimed := store.claim([PartRef("s1", 0)], lease_seconds=30)) == ["busy"]:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.01)

    # The dead worker's call spent a try; no new one starts until it is retried.
    assert claimed == ["lost"]
    status = store.get("s1")
    assert status is not None and status["possible_duplicates"] == 1 and status["attempts"] == 1


def test_a_done_part_is_never_claimed_again(store: StatusStore) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=30)
    record(store, "s1", 0, PartResult("sent", {"a@example.com": "m-1"}))

    assert store.claim([PartRef("s1", 0)], lease_seconds=30) == ["done"]


def test_recording_success_stores_recipients_and_the_message_id_index(store: StatusStore) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=30)

    record(store, "s1", 0, PartResult("sent", {"a@example.com": "m-1", "b@example.com": "m-2"}))

    status = store.get("s1")
    assert status is not None
    assert status["state"] == "sent"
    assert status["recipients"] == {
        "a@example.com": {"status": "queued", "message_id": "m-1"},
        "b@example.com": {"status": "queued", "message_id": "m-2"},
    }
    assert store.message_index.look_up(["m-1", "m-2"]) == {
        "m-1": IndexEntry("s1", ("a@example.com",)),
        "m-2": IndexEntry("s1", ("b@example.com",)),
    }


def test_recipients_and_the_message_index_are_stored_as_json_dumps_writes_them(
    store: StatusStore,
) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=30)
    recipients = {"ünï@example.com": "m-1", "b@example.com": None, 'c"q@example.com': "m-2"}

    record(store, "s1", 0, PartResult("partial", recipients, withheld=("w@example.com",)))

    stored = cast(dict[bytes, bytes], store.redis.hgetall(Keys().recipients("s1")))
    assert {k.decode(): v.decode() for k, v in stored.items()} == {
        "ünï@example.com": json.dumps({"status": "queued", "message_id": "m-1"}),
        "b@example.com": json.dumps({"status": "failed", "message_id": None}),
        'c"q@example.com': json.dumps({"status": "queued", "message_id": "m-2"}),
        "w@example.com": json.dumps({"status": "suppressed", "message_id": None}),
    }
    assert store.message_index.look_up(["m-1"]) == {"m-1": IndexEntry("s1", ("ünï@example.com",))}
    buckets = store.redis.keys("{mq}:msgidx:*")
    values = sorted(value for bucket in buckets for value in store.redis.hvals(bucket))
    assert values == [b's1\x1fc"q@example.com', "s1\x1fünï@example.com".encode()]
    assert store.message_index.look_up(["m-2"]) == {"m-2": IndexEntry("s1", ('c"q@example.com',))}
    # An entry lives at least one status TTL (600 s here) and at most two.
    assert all(600 <= store.redis.ttl(bucket) <= 1200 for bucket in buckets)


def test_state_waits_for_every_part_and_mixes_into_partially_sent(store: StatusStore) -> None:
    create(store, "s1", parts=2)
    store.claim([PartRef("s1", 0), PartRef("s1", 1)], lease_seconds=30)

    record(store, "s1", 0, PartResult("sent", {"a@example.com": "m-1"}))
    assert store.state("s1") == "sending"
    error = {"kind": "permanent", "status_code": 400, "message": "bad"}
    record(store, "s1", 1, PartResult("failed", {"b@x.invalid": None}, error))

    status = store.get("s1")
    assert status is not None and status["state"] == "partially_sent"
    assert status["recipients"]["b@x.invalid"] == {"status": "failed", "message_id": None}


def test_all_parts_failed_is_failed_with_the_error(store: StatusStore) -> None:
    create(store, "s1")
    error = {"kind": "permanent", "status_code": 400, "message": "'from' is required"}

    record(store, "s1", 0, PartResult("failed", {"a@example.com": None}, error))

    status = store.get("s1")
    assert status is not None and status["state"] == "failed" and status["error"] == error


def test_recording_twice_changes_nothing(store: StatusStore) -> None:
    create(store, "s1")
    record(store, "s1", 0, PartResult("sent", {"a@example.com": "m-1"}))
    record(store, "s1", 0, PartResult("failed", {"a@example.com": None}, {"kind": "x"}))

    status = store.get("s1")
    assert status is not None and status["state"] == "sent"
    assert status["recipients"]["a@example.com"]["message_id"] == "m-1"


def test_retrying_records_error_and_next_attempt(store: StatusStore) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=30)
    error = {"kind": "transient", "status_code": 503, "message": "unavailable"}

    with store.redis.pipeline() as pipe:
        store.mark_retrying(pipe, PartRef("s1", 0), error, time.time() + 60, maybe_delivered=True)
        pipe.execute()

    status = store.get("s1")
    assert status is not None
    assert status["state"] == "retrying"
    assert status["error"] == error
    assert status["possible_duplicates"] == 1
    assert "next_attempt_at" in status
    assert store.claim([PartRef("s1", 0)], lease_seconds=30) == ["go"]  # the lease was released


def test_group_counts_follow_state_changes(store: StatusStore) -> None:
    for send_id in ("a", "b", "c"):
        create(store, send_id, group="g1")
    store.claim([PartRef("a", 0, "g1"), PartRef("b", 0, "g1")], lease_seconds=30)
    record(store, "a", 0, PartResult("sent", {"x@example.com": "m"}), group="g1")

    assert store.group_counts("g1") == {"queued": 1, "sending": 1, "sent": 1}


def test_every_key_a_script_writes_is_declared_and_shares_the_prefix_hash_tag(
    redis_client: redis.Redis,
) -> None:
    shop = Stores.over(redis_client, Settings(key_prefix="shop")).store
    with redis_client.pipeline() as pipe:
        shop.create(pipe, "a", parts=1, created_at=now_iso(), group="g1")
        pipe.execute()
    shop.claim([PartRef("a", 0, "g1")], lease_seconds=30)
    with redis_client.pipeline() as pipe:
        shop.mark_retrying(pipe, PartRef("a", 0, "g1"), {"kind": "transient"}, time.time(), False)
        pipe.execute()
    with redis_client.pipeline() as pipe:
        shop.record(pipe, PartRef("a", 0, "g1"), PartResult("failed", {"x@example.com": None}))
        pipe.execute()
    shop.revive(PartRef("a", 0, "g1"))

    names = sorted(name.decode() for name in redis_client.scan_iter())
    # The minute's state counts (the minute may have turned meanwhile).
    minutes = [name for name in names if name.startswith("{shop}:states:")]
    assert 1 <= len(minutes) <= 2
    others = sorted(set(names) - set(minutes))
    assert others == ["{shop}:group:g1", "{shop}:group:g1:failed", "{shop}:rcpt:a", "{shop}:send:a"]
    assert shop.group_counts("g1") == {"queued": 1}
    # Requeued from the dead letters, it is no longer among the group's failures.
    assert shop.group_failures("g1") == []


def test_revive_puts_a_failed_part_back_to_queued(store: StatusStore) -> None:
    create(store, "s1")
    record(store, "s1", 0, PartResult("failed", {"a@example.com": None}, {"kind": "permanent"}))

    assert store.revive(PartRef("s1", 0)) is True

    status = store.get("s1")
    assert status is not None and status["state"] == "queued" and status["error"] is None
    assert store.claim([PartRef("s1", 0)], lease_seconds=30) == ["go"]


def test_recipient_counts_summarize_a_campaign(store: StatusStore) -> None:
    create(store, "s1", parts=1)
    recipients: dict[str, str | None] = {f"u{i}@example.com": f"m{i}" for i in range(5)}
    recipients["bad@x.invalid"] = None
    record(store, "s1", 0, PartResult("partial", recipients, {"kind": "permanent"}))

    assert store.recipient_counts("s1") == {"queued": 5, "failed": 1}


def test_waiting_counts_unread_envelopes_not_those_a_worker_holds(
    redis_client: redis.Redis,
) -> None:
    from mailqueue.core.payload import build_payload
    from mailqueue.store.outbox import Envelope, Outbox

    outbox = Outbox(redis_client, Keys(), reclaim_idle=60, ttl=60)
    outbox.ensure_group()
    [call] = build_payload(
        {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    )
    with redis_client.pipeline() as pipe:
        for n in range(3):
            outbox.add(pipe, Envelope(send_id=f"s{n}", part=0, body=call))
        pipe.execute()

    assert outbox.waiting() == 3
    held = outbox.read("worker-1", Keys().outbox, 2)
    assert len(held) == 2
    assert outbox.waiting() == 1


# -- steering's writes -----------------------------------------------------------


def test_hold_until_records_the_time_and_lists_the_send(store: StatusStore) -> None:
    create(store, "s1")
    due = time.time() + 3600

    store.hold_until("s1", due)

    assert store.not_before("s1") == pytest.approx(due, abs=0.001)
    status = store.get("s1")
    assert status is not None and status["send_at"] is not None
    assert [(send_id, state) for send_id, _, state, _ in store.scheduled()] == [("s1", "queued")]


def test_scheduled_lists_sends_to_come_soonest_first_with_state_and_campaign(
    store: StatusStore,
) -> None:
    now = time.time()
    for send_id in ("late", "soon", "past"):
        create(store, send_id)
    store.redis.hset(store.keys.send("soon"), "campaign", "spring")
    store.hold_until("late", now + 7200)
    store.hold_until("soon", now + 60)
    store.hold_until("past", now - 60)

    rows = store.scheduled(now=now)

    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("soon", "queued", "spring"),
        ("late", "queued", None),
    ]
    assert rows[0][1] == pytest.approx(now + 60)
    assert [r[0] for r in store.scheduled(limit=1, now=now)] == ["soon"]


def test_unschedule_takes_a_send_off_the_list(store: StatusStore) -> None:
    create(store, "s1")
    store.hold_until("s1", time.time() + 60)

    store.unschedule("s1")

    assert store.scheduled() == []
