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

``MemoryRateLimiter`` is an in-process twin with the same interface, for unit
tests of code that needs a limiter.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import deque
from typing import Protocol

import redis
from redis.commands.core import Script

from . import keys
from .errors import BrokerUnavailable, RateLimited
from .settings import RateLimit, Settings

__all__ = ["FleetRateLimiter", "MemoryRateLimiter", "RateLimiter", "default_margin"]

# The longest a waiting process sleeps before asking again: a cool-down set
# meanwhile by another process, or a slot freed early, is noticed within it.
MAX_SLEEP = 1.0
# Added to every sleep so that processes woken for the same free slot do not
# all ask for it in the same millisecond.
MAX_JITTER = 0.01
_MICRO = 1_000_000

# Scores are integer µs of the Redis clock (exact in a double until 2255);
# they are formatted with %d because Lua would print them with 14 digits.
# KEYS: log, cooldown. ARGV: window µs, amount, unique member.
# Returns 0 when a slot was taken, else the µs until one may be free.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local until_us = tonumber(redis.call('GET', KEYS[2]) or '0')
if until_us > now then
  return until_us - now
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', KEYS[1])
if count < amount then
  redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], count - amount, count - amount, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window - now, 1)
"""

# KEYS: cooldown. ARGV: duration µs. Sets the cool-down unless a longer one is in force.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= until_us then
  return current - now
end
local ttl_ms = math.ceil(tonumber(ARGV[1]) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', until_us), 'PX', ttl_ms)
return until_us - now
"""

# KEYS: cooldown. Returns the µs left of the cool-down, 0 when none.
_COOLDOWN_LEFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = tonumber(redis.call('GET', KEYS[1]) or '0')
return math.max(until_us - now, 0)
"""


def default_margin(limit: RateLimit) -> float:
    """The safety margin added to the window: 0.25 s, less for periods under 5 s."""
    return min(0.25, limit.period * 0.05)


class RateLimiter(Protocol):
    """What delivery code needs from a limiter; both implementations provide it."""

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


class _Waiting:
    """Blocking and non-blocking acquisition over a one-shot ``_attempt``."""

    def _attempt(self) -> float:
        """Take a slot and return 0, or return the seconds until one may be free."""
        raise NotImplementedError

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until this process may make one API request; return the seconds waited.

        Raises ``RateLimited`` without taking a slot when the wait would exceed ``max_wait``.
        """
        started = time.monotonic()
        while True:
            wait = self._attempt()
            waited = time.monotonic() - started
            if wait == 0:
                return waited
            if max_wait is not None and waited + wait > max_wait:
                raise _too_long(wait, waited, max_wait)
            time.sleep(_sleep_for(wait))

    def try_acquire(self) -> bool:
        """Take a slot if one is free now; never waits."""
        return self._attempt() == 0


class FleetRateLimiter(_Waiting):
    """A sliding-log limiter in Redis, shared by every process using the same API token."""

    def __init__(
        self, redis_client: redis.Redis, settings: Settings, *, margin: float | None = None
    ) -> None:
        self.limit = settings.rate_limit
        self.margin = default_margin(self.limit) if margin is None else margin
        self._log_key = keys.rate_limit(settings.token_key)
        self._cooldown_key = keys.cooldown(settings.token_key)
        self._window_us = round((self.limit.period + self.margin) * _MICRO)
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._penalize = redis_client.register_script(_PENALIZE)
        self._cooldown_left = redis_client.register_script(_COOLDOWN_LEFT)
        self._member_tag = f"{random.getrandbits(48):012x}"
        self._counter = 0
        self._counter_lock = threading.Lock()

    def penalize(self, retry_after: float | None) -> None:
        """Pause the whole fleet after a 429, for ``retry_after`` seconds or one period.

        A longer cool-down already in force is kept.
        """
        seconds = _cooldown_seconds(retry_after, self.limit)
        if seconds <= 0:
            return
        self._run(self._penalize, [self._cooldown_key], [round(seconds * _MICRO)])

    def cooldown_remaining(self) -> float:
        """Seconds left of the fleet's cool-down, 0.0 when none is in force."""
        return self._run(self._cooldown_left, [self._cooldown_key], []) / _MICRO

    def _attempt(self) -> float:
        with self._counter_lock:
            self._counter += 1
            # Log members must be unique fleet-wide; the pid is read per call
            # because Celery's prefork pool may copy one limiter into many children.
            member = f"{os.getpid()}:{self._member_tag}:{self._counter}"
        args: list[str | int] = [self._window_us, self.limit.amount, member]
        return self._run(self._acquire, [self._log_key, self._cooldown_key], args) / _MICRO

    def _run(self, script: Script, script_keys: list[str], args: list[str | int]) -> int:
        try:
            return int(script(keys=script_keys, args=args))
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"rate limiter store unavailable: {exc}") from exc


class MemoryRateLimiter(_Waiting):
    """The same limiter inside one process, for tests of code that needs a limiter."""

    def __init__(self, settings: Settings, *, margin: float | None = None) -> None:
        self.limit = settings.rate_limit
        self.margin = default_margin(self.limit) if margin is None else margin
        self._window = self.limit.period + self.margin
        self._granted: deque[float] = deque()
        self._cooldown_until = 0.0
        self._lock = threading.Lock()

    def penalize(self, retry_after: float | None) -> None:
        """Pause for ``retry_after`` seconds or one period; a longer pause is kept."""
        until = time.monotonic() + _cooldown_seconds(retry_after, self.limit)
        with self._lock:
            self._cooldown_until = max(self._cooldown_until, until)

    def cooldown_remaining(self) -> float:
        """Seconds left of the cool-down, 0.0 when none is in force."""
        with self._lock:
            return max(self._cooldown_until - time.monotonic(), 0.0)

    def _attempt(self) -> float:
        with self._lock:
            now = time.monotonic()
            if self._cooldown_until > now:
                return self._cooldown_until - now
            while self._granted and self._granted[0] <= now - self._window:
                self._granted.popleft()
            if len(self._granted) < self.limit.amount:
                self._granted.append(now)
                return 0.0
            return max(self._granted[0] + self._window - now, 1e-6)
