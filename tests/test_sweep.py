"""A worker's sweep on a real Redis: work whose wake-up was lost gets one, other work none."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.settings import Settings
from mailqueue.store.keys import OUTBOX_GROUP
from mailqueue.tasks import OVERDUE, sweep

RECLAIM_IDLE = 3.0
DEAD = "dead-worker"


@pytest.fixture
def published() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def client(redis_url: str, published: list[dict[str, Any]]) -> Iterator[Client]:
    settings = Settings(broker_url=redis_url, api_token="t", reclaim_idle=RECLAIM_IDLE)
    client = Client(settings, publish=published.append)
    yield client
    client.close()


def held_by_a_dead_worker(client: Client, idle: float) -> None:
    """One envelope read by a worker that died ``idle`` seconds ago, its drain still announced."""
    client.enqueue(
        {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    )
    stream = client.keys.outbox
    (envelope,) = client.outbox.read(DEAD, stream, 1)
    # As if read ``idle`` seconds ago: XCLAIM sets the entry's idle time.
    client.redis.xclaim(stream, OUTBOX_GROUP, DEAD, 0, [envelope.entry_id], idle=int(idle * 1000))
    client.waker.heartbeat(DEAD)


@pytest.mark.parametrize(
    ("idle", "drain_alive", "woken"),
    [
        # Not yet reclaimable: no wake-up, whoever is alive.
        (0.0, False, False),
        # Reclaimable, and no drain alive: wake one.
        (RECLAIM_IDLE + 0.5, False, True),
        # Just reclaimable under a drain that looks alive: it reclaims within a second.
        (RECLAIM_IDLE + 0.5, True, False),
    ],
)
def test_an_envelope_of_a_dead_worker_is_swept_once_no_drain_would_take_it(
    client: Client, published: list[dict[str, Any]], idle: float, drain_alive: bool, woken: bool
) -> None:
    held_by_a_dead_worker(client, idle=idle)
    if not drain_alive:
        client.waker.leave(DEAD)
    published.clear()
    assert sweep(client) is woken
    assert len(published) == int(woken)


def test_work_overdue_under_a_drain_that_looks_alive_gets_a_wake_up(
    client: Client, published: list[dict[str, Any]]
) -> None:
    # The wake-up scheduled for this reclaim died with the worker that held
    # it, and that worker's drain heartbeat has not yet expired.
    held_by_a_dead_worker(client, idle=RECLAIM_IDLE + OVERDUE + 1.0)
    published.clear()
    assert client.waker.drain_alive()
    assert sweep(client) is True
    assert len(published) == 1


def test_nothing_waiting_wakes_nobody(client: Client, published: list[dict[str, Any]]) -> None:
    assert sweep(client) is False
    assert published == []


def unread_for(client: Client, seconds: float, stream: str | None = None) -> None:
    """An envelope nobody has read, added ``seconds`` ago (its id says when)."""
    stream = stream or client.keys.outbox
    client.outbox.ensure_group()
    added_ms = int((time.time() - seconds) * 1000)
    client.redis.xadd(stream, {"e": b"{}"}, id=f"{added_ms}-0")


def test_transactional_mail_left_unread_under_a_drain_that_looks_alive_gets_a_wake_up(
    client: Client, published: list[dict[str, Any]]
) -> None:
    # A live drain reads transactional mail first, every round: this one is dead.
    client.waker.heartbeat(DEAD)
    unread_for(client, OVERDUE + 1.0)
    assert sweep(client) is True
    assert len(published) == 1


def test_mail_just_queued_under_a_live_drain_is_left_to_it(
    client: Client, published: list[dict[str, Any]]
) -> None:
    client.waker.heartbeat(DEAD)
    unread_for(client, 0.0)
    assert sweep(client) is False
    assert published == []


def test_campaign_mail_waiting_for_the_rate_limit_under_a_live_drain_is_left_to_it(
    client: Client, published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    mail = {"from_email": "a@example.com", "subject": "s", "text": "t"}
    client.enqueue_many([{**mail, "to": [f"r{i}@example.com"]} for i in range(3)])
    client.waker.heartbeat(DEAD)
    published.clear()
    # The sweep runs long after: the campaign's mail has waited past OVERDUE.
    later = time.time() + OVERDUE + 1.0
    monkeypatch.setattr("mailqueue.tasks.time", SimpleNamespace(time=lambda: later))
    assert sweep(client) is False
    assert published == []


def test_the_fleet_wakes_one_drain_for_overdue_work_per_period(
    client: Client, published: list[dict[str, Any]]
) -> None:
    client.waker.heartbeat(DEAD)
    unread_for(client, OVERDUE + 1.0)
    assert [sweep(client), sweep(client)] == [True, False]  # two workers' sweeps, one wake-up
    assert len(published) == 1
