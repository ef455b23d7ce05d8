"""The fleet-wide rate limiter: every process sharing one API token shares one budget.

Mailtrap allows one token ``amount`` requests per ``period`` seconds (150 per
10 s), counted on its side when requests arrive. We grant a slot a little
before the request arrives, and that delay varies, so grants that fill
exactly ``amount`` per ``period`` can still put ``amount + 1`` arrivals into
one of Mailtrap's windows. The limiter therefore keeps a sliding log over
``period + margin``: if the delay from grant to arrival varies by less than
``margin``, no window of ``period`` on Mailtrap's side ever sees more than
``amount`` arrivals (a fixed window on its side is covered too).

Why a Lua script and not ``limits`` (whose moving-window strategy is the same
idea): ``limits`` stamps entries with each client's ``time.time()``, so clock
skew between hosts breaks a fleet-wide window; its windows are whole seconds,
so ``period + margin`` cannot be expressed; and a refused hit says nothing
about when to retry, which costs a second round trip, a third for the 429
cool-down. The script below uses the Redis server's clock, microsecond
precision, and answers "granted" or "retry in N µs" (cool-down included) in
one round trip.

Two lanes share a token's window. Transactional mail may take any free
slot; bulk mail may take all but a reserve (``RESERVE_SHARE`` of the limit)
kept free for transactional mail, so a campaign never makes a password reset
wait for a slot. While bulk has work (it asked within ``DEMAND_TTL``),
transactional mail may fill all but a guaranteed bulk share
(``BULK_SHARE``), so a transactional flood never starves a campaign. Only
the reserve may sit idle while bulk mail waits.

``MemoryRateLimiter`` is an in-process twin with the same interface, for unit
tests of code that needs a limiter.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.commands.core import Script

from mailqueue.core.routing import Lane, Route
from mailqueue.errors import BrokerUnavailable, RateLimited
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.base import lua_script
from mailqueue.store.keys import Keys

__all__ = [
    "BULK_SHARE",
    "RESERVE_SHARE",
    "FleetRateLimiter",
    "Lane",
    "LaneShares",
    "MemoryRateLimiter",
    "RateLimiter",
    "default_margin",
]

# Of a token's limit: kept free for transactional mail, and guaranteed to
# bulk mail while it has work.
RESERVE_SHARE = 0.1
BULK_SHARE = 0.1
# A bulk request marks its lane as having work for this long; waiting bulk
# callers ask again at least every MAX_SLEEP, so the mark outlives the gaps.
DEMAND_TTL = 2.0

# The longest a waiting process sleeps before asking again: a cool-down set
# meanwhile by another process, or a slot freed early, is noticed within it.
MAX_SLEEP = 1.0
# Added to every sleep so that processes woken for the same free slot do not
# all ask for it in the same millisecond.
MAX_JITTER = 0.01
_MICRO = 1_000_000

# Scores are integer µs of the Redis clock (exact in a double until 2255);
# they are formatted with %d because Lua would print them with 14 digits.
# KEYS: transactional log, bulk log, cooldown, bulk demand marker.
# ARGV: window µs, amount, reserve, bulk share, lane ('t' or 'b'), unique
# member, demand marker ms. Returns 0 when a slot was taken, else the µs
# until one may be free (a lower bound: the caller asks again then).
_ACQUIRE = lua_script("ratelimit_acquire")

# KEYS: cooldown. ARGV: duration µs. Sets the cool-down unless a longer one is in force.
_PENALIZE = lua_script("ratelimit_penalize")

# KEYS: cooldown. Returns the µs left of the cool-down, 0 when none.
_COOLDOWN_LEFT = lua_script("ratelimit_cooldown_left")


def default_margin(limit: RateLimit) -> float:
    """The safety margin added to the window: 0.25 s, less for periods under 5 s."""
    return min(0.25, limit.period * 0.05)


@dataclass(frozen=True)
class LaneShares:
    """How many of a window's ``amount`` slots the lanes keep for themselves."""

    reserve: int  # never granted to bulk mail beyond its guaranteed share
    bulk: int  # granted to bulk mail even when transactional mail wants the rest

    @classmethod
    def of(cls, limit: RateLimit) -> LaneShares:
        # A limit of one request has nothing to divide: first come, first served.
        if limit.amount < 2:
            return cls(0, 0)
        return cls(
            max(1, round(limit.amount * RESERVE_SHARE)), max(1, round(limit.amount * BULK_SHARE))
        )


class RateLimiter(Protocol):
    """What delivery code needs from a limiter; both implementations provide it."""

    lane: Lane

    def for_lane(self, lane: Lane) -> RateLimiter: ...

    def acquire(self, max_wait: float | None = None) -> float: ...

    def try_acquire(self) -> bool: ...

    def penalize(self, retry_after: float | None) -> None: ...

    def cooldown_remaining(self) -> float: ...


def _cooldown_seconds(retry_after: float | None, limit: RateLimit) -> float:
    # Without a usable Retry-After (Mailtrap documents none), wait one period:
    # by then Mailtrap's window holds none of the requests that filled it.
    if retry_after is None or not math.isfinite(retry_after):
        return limit.period
    return max(retry_after, 0.0)


def _sleep_for(wait: float) -> float:
    return min(wait, MAX_SLEEP) + random.uniform(0, MAX_JITTER)


def _too_long(wait: float, waited: float, max_wait: float) -> RateLimited:
    return RateLimited(
        f"local fleet rate limiter: next API slot in {wait:.3f}s, beyond max_wait "
        f"{max_wait:g}s after {waited:.3f}s waited (no request was sent to Mailtrap)",
        retry_after=wait,
    )


Clock = Callable[[], float]
Sleep = Callable[[float], None]


class _Waiting:
    """Blocking and non-blocking acquisition over a one-shot ``_attempt``.

    ``clock`` measures the wait and ``sleep`` waits; a test gives a limiter a
    controllable pair to check what it admits without depending on the
    machine's speed.
    """

    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self.clock = clock
        self.sleep = sleep

    def _attempt(self) -> float:
        """Take a slot and return 0, or return the seconds until one may be free."""
        raise NotImplementedError

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until this process may make one API request; return the seconds waited.

        Raises ``RateLimited`` without taking a slot when the wait would exceed ``max_wait``.
        """
        started = self.clock()
        while True:
            wait = self._attempt()
            waited = self.clock() - started
            if wait == 0:
                return waited
            if max_wait is not None and waited + wait > max_wait:
                raise _too_long(wait, waited, max_wait)
            self.sleep(_sleep_for(wait))

    def try_acquire(self) -> bool:
        """Take a slot if one is free now; never waits."""
        return self._attempt() == 0


def _target(target: Settings | Route) -> tuple[RateLimit, str, Lane]:
    """The limit, the token's key and the default lane of ``target``."""
    if isinstance(target, Route):
        return target.rate_limit, target.limiter_key, target.stream
    return target.rate_limit, target.token_key, "transactional"


class FleetRateLimiter(_Waiting):
    """A sliding-log limiter in Redis, shared by every process using the same API token.

    ``target`` is a route (its limit, token and stream) or settings (their
    limit and token, transactional lane).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        target: Settings | Route,
        *,
        margin: float | None = None,
        lane: Lane | None = None,
        sleep: Sleep = time.sleep,
        key_space: Keys | None = None,
    ) -> None:
        super().__init__(sleep=sleep)
        if key_space is None:
            key_space = Keys(target.key_prefix) if isinstance(target, Settings) else Keys()
        self._key_space = key_space
        self.limit, self._token_key, default_lane = _target(target)
        self.lane: Lane = lane or default_lane
        self.margin = default_margin(self.limit) if margin is None else margin
        self.shares = LaneShares.of(self.limit)
        self._redis = redis_client
        self._target = target
        self._keys = [
            key_space.rate_limit(self._token_key),
            key_space.rate_limit_bulk(self._token_key),
            key_space.cooldown(self._token_key),
            key_space.bulk_demand(self._token_key),
        ]
        self._window_us = round((self.limit.period + self.margin) * _MICRO)
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._penalize = redis_client.register_script(_PENALIZE)
        self._cooldown_left = redis_client.register_script(_COOLDOWN_LEFT)
        self._member_tag = f"{random.getrandbits(48):012x}"
        self._counter = 0
        self._counter_lock = threading.Lock()

    def for_lane(self, lane: Lane) -> FleetRateLimiter:
        """A limiter for ``lane`` over the same token's window."""
        return FleetRateLimiter(
            self._redis,
            self._target,
            margin=self.margin,
            lane=lane,
            sleep=self.sleep,
            key_space=self._key_space,
        )

    def penalize(self, retry_after: float | None) -> None:
        """Pause the whole fleet after a 429, for ``retry_after`` seconds or one period.

        A longer cool-down already in force is kept. Both lanes pause: Mailtrap
        counts the token, not the stream.
        """
        seconds = _cooldown_seconds(retry_after, self.limit)
        if seconds <= 0:
            return
        self._run(self._penalize, [self._keys[2]], [round(seconds * _MICRO)])

    def cooldown_remaining(self) -> float:
        """Seconds left of the fleet's cool-down, 0.0 when none is in force."""
        return self._run(self._cooldown_left, [self._keys[2]], []) / _MICRO

    def window_use(self) -> int:
        """Requests granted in the current window, both lanes together (for display)."""
        try:
            seconds, micros = self._redis.time()
            cutoff = f"({int(seconds) * _MICRO + int(micros) - self._window_us}"
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.zcount(self._keys[0], cutoff, "+inf")
                pipe.zcount(self._keys[1], cutoff, "+inf")
                counts = pipe.execute()
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"rate limiter store unavailable: {exc}") from exc
        return sum(int(count) for count in counts)

    def _attempt(self) -> float:
        with self._counter_lock:
            self._counter += 1
            # Log members must be unique fleet-wide; the pid is read per call
            # because Celery's prefork pool may copy one limiter into many children.
            member = f"{os.getpid()}:{self._member_tag}:{self._counter}"
        args: list[str | int] = [
            self._window_us,
            self.limit.amount,
            self.shares.reserve,
            self.shares.bulk,
            "b" if self.lane == "bulk" else "t",
            member,
            round(DEMAND_TTL * 1000),
        ]
        return self._run(self._acquire, self._keys, args) / _MICRO

    def _run(self, script: Script, script_keys: list[str], args: list[str | int]) -> int:
        try:
            return int(script(keys=script_keys, args=args))
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"rate limiter store unavailable: {exc}") from exc


class _MemoryWindow:
    """The state both lanes of a ``MemoryRateLimiter`` share."""

    def __init__(self, limit: RateLimit, window: float, clock: Clock) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.shares = LaneShares.of(limit)
        self.granted: dict[Lane, deque[float]] = {"transactional": deque(), "bulk": deque()}
        self.bulk_asked = -math.inf
        self.cooldown_until = 0.0
        self.lock = threading.Lock()

    def attempt(self, lane: Lane) -> float:
        """The same decision as the Redis script, on this limiter's clock."""
        with self.lock:
            now = self.clock()
            if lane == "bulk":
                self.bulk_asked = now
            if self.cooldown_until > now:
                return self.cooldown_until - now
            for log in self.granted.values():
                while log and log[0] <= now - self.window:
                    log.popleft()
            wait = self._wait(lane, now)
            if wait == 0:
                self.granted[lane].append(now)
            return wait

    def _wait(self, lane: Lane, now: float) -> float:
        amount, reserve, share = self.limit.amount, self.shares.reserve, self.shares.bulk
        own = self.granted[lane]
        total = len(own) + len(self.granted["transactional" if lane == "bulk" else "bulk"])
        if lane == "bulk":
            if total < amount - reserve or (len(own) < share and total < amount):
                return 0.0
            wait = self._until(self._oldest(total - (amount - reserve) + 1), now)
            if share > 0:
                guaranteed = 1e-6
                if len(own) >= share:
                    guaranteed = self._until(own[len(own) - share], now)
                if total >= amount:
                    guaranteed = max(guaranteed, self._until(self._oldest(total - amount + 1), now))
                wait = min(wait, guaranteed)
            return wait
        cap = amount - share if now - self.bulk_asked < DEMAND_TTL else amount
        if total < amount and len(own) < cap:
            return 0.0
        wait = 1e-6
        if total >= amount:
            wait = self._until(self._oldest(total - amount + 1), now)
        if len(own) >= cap:
            wait = max(wait, self._until(own[len(own) - cap], now))
        return wait

    def _oldest(self, k: int) -> float:
        """The k-th oldest grant of both lanes together (k from 1)."""
        merged = heapq.merge(*self.granted.values())
        return next(itertools.islice(merged, k - 1, None))

    def _until(self, granted_at: float, now: float) -> float:
        return max(granted_at + self.window - now, 1e-6)


class MemoryRateLimiter(_Waiting):
    """The same limiter inside one process, for tests of code that needs a limiter."""

    def __init__(
        self,
        target: Settings | Route,
        *,
        margin: float | None = None,
        lane: Lane | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self.limit, _, default_lane = _target(target)
        self.lane: Lane = lane or default_lane
        self.margin = default_margin(self.limit) if margin is None else margin
        self._state = _MemoryWindow(self.limit, self.limit.period + self.margin, clock)

    def for_lane(self, lane: Lane) -> MemoryRateLimiter:
        """A limiter for ``lane`` over the same window."""
        other = MemoryRateLimiter.__new__(MemoryRateLimiter)
        other.__dict__.update(self.__dict__)
        other.lane = lane
        return other

    def penalize(self, retry_after: float | None) -> None:
        """Pause for ``retry_after`` seconds or one period; a longer pause is kept."""
        until = self.clock() + _cooldown_seconds(retry_after, self.limit)
        with self._state.lock:
            self._state.cooldown_until = max(self._state.cooldown_until, until)

    def cooldown_remaining(self) -> float:
        """Seconds left of the cool-down, 0.0 when none is in force."""
        with self._state.lock:
            return max(self._state.cooldown_until - self.clock(), 0.0)

    def _attempt(self) -> float:
        return self._state.attempt(self.lane)
