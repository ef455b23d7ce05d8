"""A Redis that cannot be reached surfaces from every store as BrokerUnavailable, never raw."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.events import TrackingEvent
from mailqueue.errors import BrokerUnavailable
from mailqueue.settings import Settings
from mailqueue.store.status import PartRef
from mailqueue.testing import MemoryTransport
from mailqueue.testing.redis_server import free_port

EVENT = TrackingEvent("delivered", "delivery", "2026-01-01T00:00:00Z", "m-1", event_id="e-1")


@pytest.fixture
def unreachable() -> Iterator[Client]:
    url = f"redis://user:s3cret-pass@127.0.0.1:{free_port()}/0"
    client = Client(Settings(broker_url=url, api_token="t"), publish=lambda options: None)
    yield client
    client.close()


CALLS: dict[str, Callable[[Client], Any]] = {
    "status record": lambda c: c.store.get("s1"),
    "claim": lambda c: c.store.claim([PartRef("s1", 0)], 30),
    "revive": lambda c: c.store.revive(PartRef("s1", 0)),
    "outbox read": lambda c: c.outbox.read("w", c.keys.outbox, 10),
    "outbox waiting": lambda c: c.outbox.waiting(),
    "dead letters": lambda c: c.outbox.dead_letters(),
    "drain heartbeat": lambda c: c.waker.arrive("w"),
    "drains alive": lambda c: c.waker.drain_alive(),
    "tracking events": lambda c: c.events.apply([EVENT], "2026-01-01T00:00:00Z"),
    "drain": lambda c: type(c.drainer)(c.drain_parts, MemoryTransport()).drain(budget=1),
    "enqueue": lambda c: c.enqueue(
        {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    ),
    "get_status": lambda c: c.get_status("s1"),
    "requeue": lambda c: c.requeue_dead_letters(),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_unreachable_redis_is_broker_unavailable_naming_the_masked_url(
    unreachable: Client, name: str
) -> None:
    with pytest.raises(BrokerUnavailable) as info:
        CALLS[name](unreachable)

    assert "s3cret-pass" not in str(info.value)
    if name not in ("enqueue", "get_status", "requeue"):
        assert "redis://***@127.0.0.1" in str(info.value)


def test_a_scheduled_wake_up_that_cannot_be_noted_is_logged_not_raised(
    unreachable: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # The work it is for is already in Redis: raising would make the caller
    # enqueue it twice, and the workers' sweep finds it once due.
    unreachable.waker.wake_at(0.0)

    assert "the wake-up could not be scheduled" in caplog.text
