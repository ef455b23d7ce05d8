"""An enqueue returns only once a replica holds its writes (WAIT), against real servers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from mailqueue import ReplicationTimeout, Settings
from mailqueue.client import Client
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import RateLimit
from mailqueue.store.connection import connect, replicated_transaction
from mailqueue.store.keys import Keys
from mailqueue.testing import MemoryTransport
from mailqueue.testing.redis_server import RedisServer, online_replicas


@pytest.fixture
def master() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def replica(master: RedisServer) -> Iterator[RedisServer]:
    with RedisServer(replica_of=master.port) as server:
        _wait_until(lambda: online_replicas(master.port) == 1, "the replica to sync")
        yield server


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_replica_holds_the_writes_when_the_block_ends(
    master: RedisServer, replica: RedisServer
) -> None:
    client = connect(master.url)
    reader = redis.Redis(port=replica.port)

    for number in range(50):
        with replicated_transaction(client, 1) as pipe:
            pipe.set(f"key:{number}", number)
            pipe.execute()
        # No waiting here: WAIT already had the replica acknowledge it.
        assert reader.get(f"key:{number}") == str(number).encode()


def test_a_master_without_replicas_still_takes_writes(master: RedisServer) -> None:
    client = connect(master.url)

    with replicated_transaction(client, 1) as pipe:
        pipe.set("alone", "yes")
        pipe.execute()

    assert client.get("alone") == b"yes"


def test_a_replica_that_does_not_confirm_raises_replication_timeout(
    master: RedisServer, replica: RedisServer
) -> None:
    client = connect(master.url)
    assert replica.process is not None
    # A stopped replica stays connected as far as the master knows, but
    # acknowledges nothing.
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        with (
            pytest.raises(ReplicationTimeout, match="0 of 1 replicas"),
            replicated_transaction(client, 1, timeout=0.2) as pipe,
        ):
            pipe.set("unconfirmed", "1")
            pipe.execute()
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    # The write did reach the master: the caller was told it is not yet safe.
    assert client.get("unconfirmed") == b"1"


def test_more_replicas_asked_for_than_connected_waits_for_those_connected(
    master: RedisServer, replica: RedisServer
) -> None:
    client = connect(master.url)

    with replicated_transaction(client, 3) as pipe:
        pipe.set("capped", "1")
        pipe.execute()

    assert redis.Redis(port=replica.port).get("capped") == b"1"


def test_enqueue_with_a_stopped_replica_keeps_its_idempotency_key(
    master: RedisServer, replica: RedisServer
) -> None:
    runtime = Client(Settings(broker_url=master.url, api_token="t", redis_min_replicas=1))
    message = {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ReplicationTimeout):
            runtime.enqueue(message, idempotency_key="order-1")
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)

    # The first attempt is queued on the master; a retry with the same key
    # finds it instead of queueing a second copy.
    send_id = runtime.enqueue(message, idempotency_key="order-1")
    records = list(redis.Redis(port=master.port).scan_iter(match=Keys().send("*")))
    assert records == [Keys().send(send_id).encode()]


def _waits(server: RedisServer) -> int:
    stats = redis.Redis(port=server.port).info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def test_what_mailtrap_accepted_is_on_the_replica_when_the_drain_returns_one_wait_per_call(
    master: RedisServer, replica: RedisServer
) -> None:
    settings = Settings(
        broker_url=master.url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        redis_min_replicas=1,
    )
    runtime = Client(settings, publish=lambda options: None)
    message = {"from_email": "a@example.com", "subject": "s", "text": "t"}
    ids = runtime.enqueue_many([{**message, "to": [f"r{i}@example.com"]} for i in range(20)])
    transport = MemoryTransport()
    waits_before = _waits(master)

    Drainer(runtime.drain_parts, transport).drain(budget=5)

    # One coalesced call, one WAIT for all of its twenty records.
    assert len(transport.calls) == 1
    assert _waits(master) - waits_before == 1
    # No waiting here: the replica already holds every record.
    reader = redis.Redis(port=replica.port)
    assert [reader.hget(Keys().send(send_id), "state") for send_id in ids] == [b"sent"] * 20
    runtime.close()
