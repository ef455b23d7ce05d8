"""The wake-up protocol: which drains run now, and when a worker must be woken.

Work waits in the outbox; a worker drains it only when a wake-up (a
``mailqueue.deliver`` task, published by name) reaches it. This module alone
reads and writes the keys that decide whether one is needed:

- the drains (a sorted set): every running drain, scored by when its
  heartbeat expires. A producer that sees a live drain publishes nothing: that
  drain looks for new work before it leaves, *after* leaving the set;
- the pending marker: set by the first producer of a burst on an idle fleet
  (in its enqueue transaction), so that the others publish nothing. Every
  drain clears it when it starts and when it leaves, and it expires on its
  own, so a lost wake-up costs at most ``WAKEUP_PENDING_MS``;
- the help marker: at most one extra drain woken a second under a backlog;
- the scheduled wake-up: when the earliest delayed wake-up (a retry, a
  countdown) fires, so that many retries share one.

Workers also sweep for waiting work that no live drain takes (``tasks.py``),
which covers a drain that died with its heartbeat still fresh.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.connection import unavailable
from mailqueue.store.keys import Keys

if TYPE_CHECKING:
    from mailqueue.store.outbox import Outbox

__all__ = [
    "DELIVER_TASK",
    "HEARTBEAT",
    "MAX_COUNTDOWN",
    "Activity",
    "Publish",
    "Waker",
    "fleet_activity",
]

log = logging.getLogger("mailqueue.waker")

# The task a wake-up runs, by name: publishers never import the worker's tasks.
DELIVER_TASK = "mailqueue.deliver"
# A drain announces itself for this long, renewed at every round.
HEARTBEAT = 30.0
# How long a producer's wake-up may take to start a drain before another
# producer publishes one again.
WAKEUP_PENDING_MS = 5000
# A drain under a backlog wakes at most one helper this often.
HELP_INTERVAL_MS = 1000
# The longest Celery countdown mailqueue uses: well under the visibility
# timeout, so the Redis transport never redelivers a wake-up early.
MAX_COUNTDOWN = 60.0

# Note when the earliest wake-up fires; answers 1 when the caller must
# publish one (none is still to come at or before ``due``). A wake-up whose
# time has passed covers nothing: it has fired, and its drain may already have
# looked for due work. KEYS: wakeup. ARGV: due, ttl ms, now.
_NOTE_WAKEUP = lua_script("waker_note_wakeup")

# Publishes one wake-up with these Celery options (``countdown``, ``task_id``, ...).
Publish = Callable[[dict[str, Any]], None]


class Waker(RedisStore):
    """The one owner of the drains, pending, help and scheduled wake-up keys."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, publish: Publish, url: str = "redis"
    ) -> None:
        super().__init__(client, keys, url=url)
        self.publish = publish
        self._note_wakeup = client.register_script(_NOTE_WAKEUP)

    # -- producers --------------------------------------------------------

    def announce(self, pipe: redis.client.Pipeline) -> None:
        """Queue, in a producer's enqueue transaction, the two commands ``must_wake`` reads.

        Being in the same transaction as the new work orders the two against
        every drain's ``leave``: either a drain was still in the set (it looks
        for work once more after leaving, and finds this), or none was and
        this producer publishes (or another's wake-up is on its way).
        """
        pipe.zcount(self.keys.drains, _now_ms(), "+inf")
        pipe.set(self.keys.wakeup_pending, 1, nx=True, px=WAKEUP_PENDING_MS)

    @staticmethod
    def must_wake(answers: Sequence[Any]) -> bool:
        """Whether the producer must publish: no drain runs, and its marker is the new one.

        ``answers`` are the transaction's answers; ``announce``'s are the last two.
        """
        running, marked = answers[-2], answers[-1]
        return int(running) == 0 and bool(marked)

    def after_enqueue(self, answers: Sequence[Any], **options: Any) -> None:
        """Publish the wake-up ``announce`` decided on, if any."""
        if self.must_wake(answers):
            self._publish_quietly(options, announced=True)

    def wake_at(self, due: float, **options: Any) -> None:
        """Make sure a wake-up comes at ``due`` (unix seconds): publish one unless one is due first.

        Later than ``MAX_COUNTDOWN`` away, a wake-up comes then instead, and its
        drain schedules the next.
        """
        now = time.time()
        delay = min(max(due - now, 0.0), MAX_COUNTDOWN)
        args = [now + delay, max(int((delay + 1) * 1000), 1), now]
        try:
            needed = self._note_wakeup(keys=[self.keys.wakeup], args=args)
        except redis.RedisError as exc:
            # The work is safe in Redis already; the workers' sweep finds it
            # once due. Raising would make a producer enqueue it twice.
            log.warning("queued, but the wake-up could not be scheduled: %s", type(exc).__name__)
            return
        if needed:
            self._publish_quietly({**options, "countdown": delay}, announced=False)

    def wake_soon(self, **options: Any) -> None:
        """Publish a wake-up now; a broker that cannot take it is logged, not raised.

        For callers whose work is already safe in the outbox: a running or a
        later drain, or a worker's sweep, delivers it anyway.
        """
        self._publish_quietly(options, announced=False)

    def wake(self, delay: float = 0.0, **options: Any) -> None:
        """Publish a wake-up ``delay`` seconds from now; broker errors are raised."""
        if delay > 0:
            options["countdown"] = delay
        self.publish(options)

    def _publish_quietly(self, options: dict[str, Any], *, announced: bool) -> None:
        try:
            self.publish(options)
        except Exception as exc:  # kombu raises its own OperationalError family
            # Raising would make the caller enqueue its work twice.
            log.warning("queued, but no worker could be woken: %s", type(exc).__name__)
            if announced:
                # Let the next producer try instead of waiting for the marker to expire.
                with contextlib.suppress(redis.RedisError):
                    self.redis.delete(self.keys.wakeup_pending)

    # -- drains -------------------------------------------------------------

    @translated("announce a drain")
    def arrive(self, consumer: str) -> None:
        """A drain starts: visible as running, it stands for any wake-up announced so far."""
        self.heartbeat(consumer)
        self.redis.delete(self.keys.wakeup_pending)

    @translated("renew a drain's heartbeat")
    def heartbeat(self, consumer: str) -> None:
        """Renew a running drain's heartbeat."""
        expires = int((time.time() + HEARTBEAT) * 1000)
        self.redis.zadd(self.keys.drains, {consumer: expires})

    @translated("end a drain")
    def leave(self, consumer: str) -> None:
        """A drain stops being visible. It must look for work once more afterwards.

        A producer that saw it alive published nothing, so whatever it added
        before this call must be seen by this drain after it.
        """
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.drains, consumer)
            pipe.delete(self.keys.wakeup_pending)
            pipe.execute()

    @translated("wake a helper drain")
    def call_for_help(self) -> None:
        """Under a backlog, wake one more worker (at most once per ``HELP_INTERVAL_MS``)."""
        if self.redis.set(self.keys.drain_help, 1, nx=True, px=HELP_INTERVAL_MS):
            self.wake()

    @translated("wake a drain for overdue work")
    def wake_for_overdue(self, interval_ms: int) -> bool:
        """Wake a drain for work whose wake-up was lost: one per ``interval_ms``, fleet-wide."""
        if self.redis.set(self.keys.drain_overdue, 1, nx=True, px=interval_ms):
            self.wake()
            return True
        return False

    # -- observers ----------------------------------------------------------

    @translated("read the running drains")
    def drains(self) -> tuple[int, float | None]:
        """How many drains are alive, and when the newest heartbeat expires (unix seconds)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self.keys.drains, _now_ms(), "+inf")
            pipe.zrange(self.keys.drains, -1, -1, withscores=True)
            live, newest = pipe.execute()
        return int(live), (float(newest[0][1]) / 1000 if newest else None)

    @translated("read the running drains")
    def drain_alive(self) -> bool:
        """Whether any drain's heartbeat is still fresh."""
        return bool(self.redis.zcount(self.keys.drains, _now_ms(), "+inf"))


def _now_ms() -> int:
    return int(time.time() * 1000)

# -- whether anything is working on the queue -------------------------------------------
#
# Read-only, for people: ``mailqueue status`` uses it to say that a send is
# waiting because no worker is draining, rather than just that it is queued.
# A drain keeps a heartbeat in the drains set while it runs and removes it when
# it ends; a drain that died leaves its last one behind until a sweep.


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
