"""Pacing holds across a fleet: two workers share one token's schedule of calls.

Each worker process books its transactional calls in the token's schedule in
Redis, so the fleet as a whole starts a call about once every interval,
whichever worker makes it, and each call carries what gathered meanwhile.
Without a shared schedule each worker would pace only itself, and two workers
would start calls twice as often.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import mailqueue
from mailqueue.settings import RateLimit
from mailqueue.store.pacing import PaceRule
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import wait_final

pytestmark = pytest.mark.e2e

LIMIT = RateLimit(10, 4.0)  # a call every 0.6 s or so, once the burst of 2 is spent
RATE = 20  # messages a second, about a dozen a call at the fleet's pace
SECONDS = 8


@pytest.fixture
def limited_mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(rate_limit=(LIMIT.amount, LIMIT.period), latency=0.05) as server:
        yield server


def order(index: int) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [f"customer{index}@example.com"],
        "subject": f"Order {index}",
        "text": "It ships today.",
    }


def produce_steadily(count: int, rate: float) -> list[str]:
    """``count`` lone sends, one every ``1 / rate`` seconds on average."""
    ids: list[str] = []
    start = time.monotonic()
    for index in range(count):
        wait = start + index / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        ids.append(mailqueue.enqueue(order(index)))
    return ids


def test_two_workers_start_calls_on_one_schedule_without_a_429(
    limited_mailtrap: LocalMailtrap, redis_url: str
) -> None:
    settings = limited_mailtrap.settings(
        redis_url, rate_limit=f"{LIMIT.amount}/{LIMIT.period:g}s", reconcile_settle=0.5
    )
    mailqueue.configure(settings)
    count = RATE * SECONDS
    with (
        WorkerProcess(settings, concurrency=2, loglevel="INFO", hostname="one@%h") as one,
        WorkerProcess(settings, concurrency=2, loglevel="INFO", hostname="two@%h") as two,
    ):
        ids: list[str] = []
        producer = threading.Thread(target=lambda: ids.extend(produce_steadily(count, RATE)))
        producer.start()
        producer.join()
        try:
            records = wait_final(ids, timeout=60)
        except AssertionError:
            print(one.output(), two.output())
            raise
        logs = (one.output(), two.output())

    assert all(record["state"] == "sent" for record in records.values())
    subjects = Counter(m.payload["subject"] for m in limited_mailtrap.accepted)
    assert subjects == Counter(f"Order {i}" for i in range(count))  # each once
    assert limited_mailtrap.stats.rate_limited == 0
    # Both workers drained the outbox.
    assert all("mailqueue.deliver" in log for log in logs)

    starts = sorted({(m.received_at, m.call) for m in limited_mailtrap.accepted})
    calls = len(starts)
    assert calls <= count / 4  # lone sends rode calls together
    # After the idle burst, calls from the two workers are spaced by the shared
    # interval, whichever worker makes them. Schedules of their own would let
    # each drain process start its calls an interval apart from its own only.
    # A start reaches the server a little late at times on a loaded machine,
    # which can shorten the gap after it: one such gap is forgiven.
    rule = PaceRule.of(LIMIT)
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(starts)][rule.burst :]
    close = [round(gap, 3) for gap in gaps if gap < rule.interval / 2]
    assert len(close) <= 1, (rule.interval, close)
