"""The write that makes a send final says so, exactly once per outcome (real Redis)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from mailqueue.settings import Settings
from mailqueue.store.status import (
    STATE_MINUTES_KEPT,
    PartRef,
    PartResult,
    Recorded,
    StatusStore,
    became_final,
)
from mailqueue.store.stores import Stores

SENT = PartResult("sent", {"a@example.com": "m-1"})
FAILED = PartResult("failed", {"a@example.com": None}, {"kind": "permanent", "message": "no"})


@pytest.fixture
def store(redis_client: redis.Redis, redis_url: str) -> StatusStore:
    return Stores.over(redis_client, Settings(broker_url=redis_url, status_ttl=600)).store


def create(store: StatusStore, send_id: str, parts: int = 1) -> None:
    with store.redis.pipeline() as pipe:
        store.create(pipe, send_id, parts=parts, created_at="2026-01-01T00:00:00.000Z")
        pipe.execute()


def finals(store: StatusStore, *writes: tuple[PartRef, PartResult]) -> list[str]:
    """Record ``writes`` in one pipeline; the sends it made final."""
    with store.redis.pipeline(transaction=True) as pipe:
        # Other commands around the writes, as a worker's pipeline has them.
        pipe.ping()
        recorded: list[Recorded] = []
        for ref, result in writes:
            recorded.append(store.record(pipe, ref, result))
            pipe.ping()
        results = pipe.execute()
    return became_final(recorded, results)


def test_recording_a_single_part_makes_its_send_final(store: StatusStore) -> None:
    create(store, "s1")

    assert finals(store, (PartRef("s1", 0), SENT)) == ["s1"]


def test_recording_a_done_part_again_does_not(store: StatusStore) -> None:
    create(store, "s1")
    finals(store, (PartRef("s1", 0), SENT))

    assert finals(store, (PartRef("s1", 0), SENT)) == []
    assert finals(store, (PartRef("s1", 0), FAILED)) == []


def test_only_the_write_ending_the_last_part_makes_a_send_final(store: StatusStore) -> None:
    create(store, "s1", parts=3)

    assert finals(store, (PartRef("s1", 2), SENT)) == []
    assert finals(store, (PartRef("s1", 0), FAILED)) == []
    assert finals(store, (PartRef("s1", 1), SENT)) == ["s1"]
    assert store.state("s1") == "partially_sent"
    assert finals(store, (PartRef("s1", 1), SENT), (PartRef("s1", 0), SENT)) == []


def test_two_writers_of_the_last_part_in_one_pipeline_make_it_final_once(
    store: StatusStore,
) -> None:
    create(store, "s1")
    create(store, "s2")

    made = finals(
        store,
        (PartRef("s1", 0), SENT),
        (PartRef("s2", 0), FAILED),
        (PartRef("s1", 0), FAILED),
    )

    assert made == ["s1", "s2"]


def test_a_retried_part_makes_its_send_final_when_it_ends_not_when_it_retries(
    store: StatusStore,
) -> None:
    create(store, "s1")
    ref = PartRef("s1", 0)
    store.claim([ref], lease_seconds=30)
    with store.redis.pipeline() as pipe:
        store.mark_retrying(pipe, ref, {"kind": "transient", "message": "503"}, None, False)
        pipe.execute()
    assert store.state("s1") == "retrying"
    store.claim([ref], lease_seconds=30)

    assert finals(store, (ref, SENT)) == ["s1"]


def test_a_part_found_in_email_logs_makes_its_send_final_and_the_dead_workers_late_answer_does_not(
    store: StatusStore,
) -> None:
    create(store, "s1")
    ref = PartRef("s1", 0)
    # A worker claimed the part and died mid-call: its lease ran out.
    assert store.claim([ref], lease_seconds=0.001, reconcile=True) == ["go"]
    with store.redis.pipeline() as pipe:
        store.mark_doubtful(pipe, "s1", 0, 0.0)
        pipe.execute()
    store.redis.hset(store.keys.send("s1"), "lease:0", 1)
    assert store.claim([ref], lease_seconds=30, reconcile=True) == ["lost_doubt"]

    assert finals(store, (ref, SENT)) == ["s1"]
    assert finals(store, (ref, SENT)) == []


def test_a_cancelled_send_is_made_final_by_the_worker_ending_its_parts(
    store: StatusStore,
) -> None:
    create(store, "s1", parts=2)
    assert store.cancel("s1") == "queued"
    assert store.claim([PartRef("s1", 0), PartRef("s1", 1)], 30) == ["cancelled", "cancelled"]

    with store.redis.pipeline(transaction=True) as pipe:
        first = store.finish_unsent(pipe, PartRef("s1", 0), ["a@example.com"], "cancelled")
        second = store.finish_unsent(pipe, PartRef("s1", 1), ["b@example.com"], "cancelled")
        results = pipe.execute()

    assert became_final([first, second], results) == ["s1"]
    assert store.state("s1") == "cancelled"


def test_a_part_requeued_from_the_dead_letters_ends_in_a_new_final_outcome(
    store: StatusStore,
) -> None:
    create(store, "s1")
    ref = PartRef("s1", 0)
    assert finals(store, (ref, FAILED)) == ["s1"]
    assert store.revive(ref)

    assert finals(store, (ref, SENT)) == ["s1"]
    assert finals(store, (ref, SENT)) == []


def test_state_changes_are_counted_per_minute_once_each(store: StatusStore) -> None:
    create(store, "s1")
    create(store, "s2", parts=2)
    ref = PartRef("s1", 0)
    store.claim([ref], lease_seconds=30)
    with store.redis.pipeline() as pipe:
        store.mark_retrying(pipe, ref, {"kind": "transient", "message": "503"}, None, False)
        pipe.execute()
    finals(store, (ref, SENT), (ref, SENT), (PartRef("s2", 0), FAILED))
    finals(store, (PartRef("s2", 1), FAILED))

    minutes = store.states_by_minute(60)

    assert len(minutes) == 60
    assert minutes[-1][0] - minutes[0][0] == 59 * 60
    totals: dict[str, int] = {}
    for _, counts in minutes:
        for state, count in counts.items():
            totals[state] = totals.get(state, 0) + count
    assert totals == {"queued": 2, "retrying": 1, "sent": 1, "failed": 1}


def test_parts_recorded_in_one_script_call_answer_each_in_order(store: StatusStore) -> None:
    create(store, "s1", parts=2)
    create(store, "s2")
    writes = [
        (PartRef("s1", 0), SENT, ()),
        (PartRef("s2", 0), FAILED, ()),
        (PartRef("s1", 1), SENT, ()),
        (PartRef("s1", 1), SENT, ()),
    ]
    with store.redis.pipeline(transaction=True) as pipe:
        pipe.ping()
        recorded = store.record_all(pipe, writes)
        pipe.ping()
        results = pipe.execute()

    assert [r.became_final(results) for r in recorded] == [False, True, True, False]
    assert became_final(recorded, results) == ["s2", "s1"]
    assert (store.state("s1"), store.state("s2")) == ("sent", "failed")


def test_a_minutes_state_counts_expire(store: StatusStore) -> None:
    create(store, "s1")
    ref = PartRef("s1", 0)
    store.claim([ref], lease_seconds=30)
    with store.redis.pipeline() as pipe:
        store.mark_retrying(pipe, ref, {"kind": "transient", "message": "503"}, None, False)
        pipe.execute()
    store.redis.delete(*store.redis.keys(store.keys.state_minute("*")))
    store.claim([ref], lease_seconds=30)
    with store.redis.pipeline() as pipe:
        store.mark_retrying(pipe, ref, {"kind": "transient", "message": "503"}, None, False)
        pipe.execute()
    retried = store.redis.keys(store.keys.state_minute("*"))
    store.redis.delete(*retried)
    finals(store, (ref, SENT))
    ended = store.redis.keys(store.keys.state_minute("*"))

    assert retried and ended
    assert all(0 < store.redis.ttl(key) <= STATE_MINUTES_KEPT for key in retried + ended)


def test_sends_one_call_made_final_are_counted_in_their_minute_with_one_write_a_state(
    store: StatusStore,
) -> None:
    for number in range(5):
        create(store, f"s{number}")
    writes = [(PartRef(f"s{n}", 0), SENT if n < 3 else FAILED, ()) for n in range(5)]
    # The third write repeats the first: done already, it counts nothing.
    writes.insert(2, (PartRef("s0", 0), SENT, ()))
    store.redis.config_resetstat()

    with store.redis.pipeline(transaction=True) as pipe:
        recorded = store.record_all(pipe, writes)
        results = pipe.execute()

    assert became_final(recorded, results) == ["s0", "s1", "s2", "s3", "s4"]
    stats = store.redis.info("commandstats")
    # One count a state for the minute, not one a send.
    assert int(stats["cmdstat_hincrby"]["calls"]) == 2
    totals: dict[Any, int] = {}
    minutes = store.redis.keys(store.keys.state_minute("*"))
    for minute in minutes:  # two if the minute turned since the creates
        for state, count in store.redis.hgetall(minute).items():
            totals[state] = totals.get(state, 0) + int(count)
        assert 0 < store.redis.ttl(minute) <= STATE_MINUTES_KEPT
    assert totals == {b"queued": 5, b"sent": 3, b"failed": 2}
