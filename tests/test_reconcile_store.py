"""The status store's side of reconciliation: doubtful parts, on a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult, StatusStore
from mailqueue.store.stores import Stores


@pytest.fixture
def store(redis_client: redis.Redis, redis_url: str) -> StatusStore:
    return Stores.over(redis_client, Settings(broker_url=redis_url, status_ttl=600)).store


def create(store: StatusStore, send_id: str) -> None:
    with store.redis.pipeline() as pipe:
        store.create(pipe, send_id, parts=1, created_at="2026-01-01T00:00:00.000Z")
        pipe.execute()


def test_a_dead_workers_lease_makes_the_part_doubtful_since_the_lease_began(
    store: StatusStore,
) -> None:
    create(store, "s1")
    before = time.time()
    store.claim([PartRef("s1", 0)], lease_seconds=0.05, reconcile=True)
    deadline = time.monotonic() + 10
    while (claimed := store.claim([PartRef("s1", 0)], 30, reconcile=True)) == ["busy"]:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.01)
    assert claimed == ["lost_doubt"]
    ((since, looks),) = store.doubts([("s1", 0)])
    assert since is not None and before - 1 <= since <= time.time()
    assert looks == 0
    status = store.get("s1")
    assert status is not None and status["possible_duplicates"] == 0


def test_a_part_marked_doubtful_stays_so_until_recorded(store: StatusStore) -> None:
    create(store, "s1")
    assert store.claim([PartRef("s1", 0)], 30, reconcile=True) == ["go"]
    with store.redis.pipeline() as pipe:
        store.mark_doubtful(pipe, "s1", 0, 1000.0)
        store.mark_doubtful(pipe, "s1", 0, 2000.0)  # the earliest call is kept
        store.note_look(pipe, "s1", 0)
        store.mark_retrying(pipe, PartRef("s1", 0), {"kind": "transient"}, time.time(), False)
        pipe.execute()
    assert store.claim([PartRef("s1", 0)], 30, reconcile=True) == ["doubt"]
    assert store.doubts([("s1", 0)]) == [(1000.0, 1)]
    with store.redis.pipeline() as pipe:
        store.record(pipe, PartRef("s1", 0), PartResult("sent", {"a@example.com": "m1"}))
        store.count(pipe, "s1", "reconciled")
        pipe.execute()
    assert store.doubts([("s1", 0)]) == [(None, 0)]
    status = store.get("s1")
    assert status is not None and status["reconciled"] == 1 and status["state"] == "sent"


def test_without_reconciling_a_dead_workers_lease_is_a_possible_duplicate(
    store: StatusStore,
) -> None:
    create(store, "s1")
    store.claim([PartRef("s1", 0)], lease_seconds=0.05)
    deadline = time.monotonic() + 10
    while (claimed := store.claim([PartRef("s1", 0)], 30)) == ["busy"]:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.01)
    assert claimed == ["lost"]
    status = store.get("s1")
    assert status is not None and status["possible_duplicates"] == 1
