"""The wake-up protocol on a real Redis: no message is ever left waiting with no drain coming."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mailqueue.client import Client
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.keys import Keys
from mailqueue.testing import MemoryTransport

PRODUCERS = 4
MESSAGES_EACH = 60
BURSTS = 150


def message(producer: int, index: int) -> dict[str, Any]:
    return {
        "from_email": "shop@example.com",
        "to": [f"p{producer}-{index}@example.com"],
        "subject": "Your order",
        "text": "It ships today.",
    }


class Fleet:
    """Workers as threads: each takes wake-ups from one queue and runs a drain per wake-up."""

    def __init__(self, client: Client, wakeups: queue.Queue[dict[str, Any]], size: int) -> None:
        self.transport = MemoryTransport()
        self.drainers = [Drainer(client.drain_parts, transport=self.transport) for _ in range(size)]
        self.wakeups = wakeups
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._work, args=(d,)) for d in self.drainers]

    def _work(self, drainer: Drainer) -> None:
        while not self.stop.is_set():
            try:
                options = self.wakeups.get(timeout=0.05)
            except queue.Empty:
                continue
            if options.get("countdown"):
                # A scheduled wake-up (a retry or a reclaim): none is due in this test.
                continue
            try:
                # A short budget: drains hand over and leave often, where the races are.
                drainer.drain(budget=0.02)
            except BaseException as exc:  # pragma: no cover - reported by the test
                self.errors.append(exc)

    def __enter__(self) -> Fleet:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


@pytest.fixture
def wakeups() -> queue.Queue[dict[str, Any]]:
    return queue.Queue()


@pytest.fixture
def client(redis_url: str, wakeups: queue.Queue[dict[str, Any]]) -> Iterator[Client]:
    settings = Settings(
        broker_url=redis_url, api_token="t", rate_limit=RateLimit.parse("100000/1s")
    )
    client = Client(settings, publish=wakeups.put)
    yield client
    client.close()


def produce(client: Client, producer: int, ids: list[str]) -> None:
    for index in range(MESSAGES_EACH):
        ids.append(client.enqueue(message(producer, index)))


def wait_sent(client: Client, ids: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {client.store.state(send_id) for send_id in ids} == {"sent"}:
            return
        time.sleep(0.002)
    raise AssertionError(
        f"left waiting: {client.outbox.waiting()} envelopes, drains alive: {client.waker.drains()}"
    )


def produce_one(client: Client, ids: list[str], message: dict[str, Any], delay: float) -> None:
    time.sleep(delay)  # jitter, not a wait: where in a drain's life this enqueue lands
    ids.append(client.enqueue(message))


def test_producers_racing_two_drainers_leave_nothing_waiting(
    client: Client, wakeups: queue.Queue[dict[str, Any]]
) -> None:
    ids: list[str] = []
    with Fleet(client, wakeups, size=2) as fleet:
        producers = [
            threading.Thread(target=produce, args=(client, n, ids)) for n in range(PRODUCERS)
        ]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        # Nothing else will wake a worker now: whatever is left must be taken
        # by a drain already running or by a wake-up already published.
        wait_sent(client, ids, timeout=30)

    assert fleet.errors == []
    assert len(ids) == PRODUCERS * MESSAGES_EACH
    delivered = [r for call in fleet.transport.calls for r in call.recipients]
    assert len(delivered) == len(ids)


def test_the_last_message_of_a_burst_is_never_stranded(
    client: Client, wakeups: queue.Queue[dict[str, Any]]
) -> None:
    # The dangerous moment is a drain finding the outbox empty and leaving
    # while a producer enqueues: that producer saw the drain alive and
    # published nothing. Many small bursts, each the last for a while, with
    # the producers' starts spread over the drains' life, meet that moment.
    rng = random.Random(11)
    with Fleet(client, wakeups, size=2) as fleet:
        for burst in range(BURSTS):
            ids: list[str] = []
            producers = [
                threading.Thread(
                    target=produce_one, args=(client, ids, message(n, burst), rng.uniform(0, 0.02))
                )
                for n in range(2)
            ]
            for thread in producers:
                thread.start()
            for thread in producers:
                thread.join()
            wait_sent(client, ids)

    assert fleet.errors == []


def test_a_burst_on_an_idle_fleet_publishes_one_wake_up(
    client: Client, wakeups: queue.Queue[dict[str, Any]]
) -> None:
    for index in range(20):
        client.enqueue(message(0, index))

    assert wakeups.qsize() == 1


def test_a_drain_clears_the_pending_marker_when_it_starts_and_leaves(
    client: Client, redis_client: redis.Redis
) -> None:
    client.waker.arrive("drain-a")
    redis_client.set(Keys().wakeup_pending, 1)

    client.waker.leave("drain-a")

    assert not redis_client.exists(Keys().wakeup_pending)
    assert client.waker.drains() == (0, None)


def test_a_failed_publish_lets_the_next_producer_try_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    published: list[dict[str, Any]] = []

    def broker_down(options: dict[str, Any]) -> None:
        raise ConnectionError("broker down")

    failing = Client(Settings(broker_url=redis_url, api_token="t"), publish=broker_down)
    failing.enqueue(message(0, 0))
    working = Client(Settings(broker_url=redis_url, api_token="t"), publish=published.append)
    working.enqueue(message(0, 1))

    assert len(published) == 1


def test_scheduled_wake_ups_share_the_earliest(
    client: Client, wakeups: queue.Queue[dict[str, Any]]
) -> None:
    due = time.time() + 30

    client.waker.wake_at(due)
    client.waker.wake_at(due + 10)  # covered by the first
    client.waker.wake_at(due - 10)  # earlier: needs its own

    countdowns = [wakeups.get_nowait()["countdown"] for _ in range(wakeups.qsize())]
    assert len(countdowns) == 2
    assert countdowns[0] > countdowns[1]


def test_a_wake_up_already_due_does_not_cover_a_later_retry(
    client: Client, wakeups: queue.Queue[dict[str, Any]]
) -> None:
    client.waker.wake_at(time.time() - 0.5)  # fires at once
    client.waker.wake_at(time.time() + 1)  # its drain may have looked already: another

    assert wakeups.qsize() == 2
