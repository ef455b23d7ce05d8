"""Whether anything is working on the queue: live drains, the last heartbeat, the backlog.

Read-only, for people: ``mailqueue status`` uses it to say that a send is
waiting because no worker is draining, rather than just that it is queued.
A drain keeps a heartbeat in the drains set while it runs and removes it when
it ends; a drain that died leaves its last one behind until a sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from mailqueue.store.connection import unavailable
from mailqueue.store.outbox import Outbox
from mailqueue.store.waker import HEARTBEAT, Waker

__all__ = ["Activity", "fleet_activity"]


@dataclass(frozen=True)
class Activity:
    """A snapshot of the fleet's work on the queue."""

    live_drains: int
    # When the most recent heartbeat still on record was written (unix
    # seconds), None when there is none: every drain ended cleanly, or none ran.
    last_heartbeat: float | None
    # Envelopes in the outbox that no worker has taken yet.
    waiting: int

    def idle_for(self, now: float | None = None) -> float | None:
        """Seconds since the last heartbeat, 0 while a drain runs, None when unknown."""
        if self.live_drains:
            return 0.0
        if self.last_heartbeat is None:
            return None
        return max((now if now is not None else time.time()) - self.last_heartbeat, 0.0)


def fleet_activity(*, waker: Waker, outbox: Outbox) -> Activity:
    """Live drains, the last heartbeat and the outbox backlog, in two round trips."""
    try:
        live, expires = waker.drains()
        waiting = outbox.waiting()
    except redis.RedisError as exc:
        raise unavailable(outbox.url, "read the fleet's activity", exc) from None
    # A heartbeat is stored as the moment it expires.
    beat = expires - HEARTBEAT if expires is not None else None
    return Activity(live_drains=live, last_heartbeat=beat, waiting=waiting)
