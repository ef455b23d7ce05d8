"""Pacing of transactional calls: spend a token's window evenly, never all at once.

The fleet rate limiter (``ratelimit.py``) grants a slot whenever the window
has one. A drain that starts a call as soon as anything waits spends a
window's 150 slots in a few seconds under steady traffic; then every message
waits for the window to reopen. The pacer spaces the starts of transactional
calls instead: a token's transactional calls start at most once every
``interval`` seconds fleet-wide (a little more than ``period / amount``), and
each call carries everything that gathered meanwhile, up to a ``batch``
call's 500 messages. Steady traffic then never finds the window empty, at any
rate up to 500 messages a call.

An idle token keeps its burst: the first ``burst`` calls start at once, as
GCRA's tolerance allows, and the interval is chosen so that those calls plus
the spaced ones still fit the window. While bulk mail has work the interval
widens so that transactional calls leave bulk its guaranteed share; and when
a campaign already holds most of the window, transactional calls spread the
slots left to them (the reserve, and their own as they age out) over the
window instead of spending them at once (``interval_for``).

The schedule is a GCRA "theoretical arrival time" kept in Redis, on the Redis
clock, so it holds across processes and hosts. A call books the next start
and learns how long to wait for it; the limiter still grants the slot, so
pacing never lets more through than the window allows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from mailqueue.errors import BrokerUnavailable
from mailqueue.settings import RateLimit
from mailqueue.store.base import lua_script
from mailqueue.store.keys import Keys
from mailqueue.store.ratelimit import LaneShares, default_margin

__all__ = ["BURST_CALLS", "Booking", "PaceRule", "Pacer", "book", "interval_for"]

# Calls an idle token may start at once before spacing sets in.
BURST_CALLS = 4
_MICRO = 1_000_000


@dataclass(frozen=True)
class Booking:
    """A booked start: ``wait`` seconds until it; the next start not before ``next_in``."""

    tat: float
    wait: float
    next_in: float


@dataclass(frozen=True)
class PaceRule:
    """The spacing of one token's transactional calls, alone and beside bulk mail."""

    interval: float  # seconds between starts while the lane is alone
    interval_beside_bulk: float  # seconds between starts while bulk mail has work
    burst: int

    @classmethod
    def of(
        cls, limit: RateLimit, *, margin: float | None = None, burst: int = BURST_CALLS
    ) -> PaceRule:
        """Spacing that keeps ``burst`` plus the spaced calls inside one window of the limiter."""
        window = limit.period + (default_margin(limit) if margin is None else margin)
        shares = LaneShares.of(limit)
        burst = max(1, min(burst, limit.amount // 4))

        # One call more than the arithmetic allows is left unused: a start the
        # pacer grants reaches the limiter a moment later, and not always in order.
        def spacing(slots: int) -> float:
            return window / max(slots - burst - 1, 1)

        return cls(spacing(limit.amount), spacing(limit.amount - shares.bulk), burst)


def interval_for(
    rule: PaceRule, window: float, limit: RateLimit, held: int, bulk_held: int, bulk_waits: bool
) -> float:
    """The spacing of the next transactional start, from the window's current use.

    ``held`` and ``bulk_held``: the lanes' grants in the limiter's window.
    The lane may count on the slots it holds (each comes back to it as it
    ages out) and those free to it now; spread over a window, they last.
    """
    own_cap = limit.amount - LaneShares.of(limit).bulk if bulk_waits else limit.amount
    free = max(0, min(limit.amount - held - bulk_held, own_cap - held))
    base = rule.interval_beside_bulk if bulk_waits else rule.interval
    return max(base, window / max(held + free - rule.burst - 1, 1))


def book(tat: float, now: float, interval: float, burst: int) -> Booking:
    """GCRA with booking: the schedule after one more start at ``now``, and its wait.

    ``tat`` is the theoretical arrival time of the schedule (its end); starts
    may run ``burst`` intervals ahead of it.
    """
    new_tat = max(tat, now) + interval
    start = max(now, new_tat - burst * interval)
    following = max(now, new_tat + interval - burst * interval)
    return Booking(new_tat, start - now, following - now)


# KEYS: the schedule, the bulk demand marker, the limiter's transactional and
# bulk logs. ARGV: interval µs alone, interval µs beside bulk, burst, window
# µs, amount, bulk share. Returns {wait µs, next start in µs}; the arithmetic
# is ``interval_for`` and ``book`` above, on the Redis clock.
_BOOK = lua_script("pacing_book")


class Pacer:
    """The fleet-wide spacing of one token's transactional calls (see the module docstring).

    ``due`` answers from this process's memory, without Redis: a drain asks it
    before every read and books only when it has something to send.
    """

    def __init__(
        self, redis_client: redis.Redis, limit: RateLimit, token_key: str, keys: Keys
    ) -> None:
        margin = default_margin(limit)
        self.rule = PaceRule.of(limit, margin=margin)
        self._keys = [
            keys.pace(token_key),
            keys.bulk_demand(token_key),
            keys.rate_limit(token_key),
            keys.rate_limit_bulk(token_key),
        ]
        self._args = [
            round(self.rule.interval * _MICRO),
            round(self.rule.interval_beside_bulk * _MICRO),
            self.rule.burst,
            round((limit.period + margin) * _MICRO),
            limit.amount,
            LaneShares.of(limit).bulk,
        ]
        self._book = redis_client.register_script(_BOOK)
        self._next_at = 0.0

    def due(self) -> float:
        """Seconds until this process should book the next start, as far as it knows."""
        return max(self._next_at - time.monotonic(), 0.0)

    def book(self) -> float:
        """Book the next start of a call; return the seconds to wait for it."""
        try:
            wait_us, next_us = self._book(keys=self._keys, args=self._args)
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"rate limiter store unavailable: {exc}") from exc
        self._next_at = time.monotonic() + int(next_us) / _MICRO
        return int(wait_us) / _MICRO
