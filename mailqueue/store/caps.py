"""Volume caps: messages per hour and per day an account may hand to Mailtrap, fleet-wide.

Mailtrap plans cap both (new accounts 150 an hour; the free plan 150 a day,
refused beyond). A worker asks ``take`` before each call; when the call's
messages would pass a cap, the call waits in the queue until the window has
room, instead of reaching Mailtrap and being refused or delayed there.

Windows slide: the hourly one is counted in minute buckets, the daily one in
hour buckets, one Redis hash each, so a burst at the turn of an hour cannot
pass twice the cap. Transactional mail comes first: bulk mail may use the cap
less a reserve (``cap_transactional_reserve``, a share of each cap), and only
transactional mail may use the reserve, so a password reset waits only when
the cap itself is used up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import redis

from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.keys import Keys

__all__ = ["CapLimiter", "Caps", "Lane"]

Lane = Literal["transactional", "bulk"]

# Take ``amount`` from both windows if both have room for the lane, else say
# how long until they might. KEYS: hourly hash (minute buckets), daily hash
# (hour buckets). ARGV: now (s), amount, hourly cap (0: none), daily cap (0:
# none), hourly reserve, daily reserve, lane ("bulk" leaves the reserve alone).
# Answers 0 when taken, else the seconds to wait (at least 1).
_TAKE = lua_script("caps_take")


# What is left of both windows for the lane, without taking anything. KEYS and
# ARGV as ``_TAKE`` but no amount: ARGV: now (s), hourly cap, daily cap,
# hourly reserve, daily reserve, lane. Answers {messages left (-1: no cap),
# seconds until the tighter window frees some}.
_ROOM = lua_script("caps_room")


@dataclass(frozen=True)
class Caps:
    """An account's caps: messages an hour and a day (None: no cap), and the reserve share."""

    hourly: int | None = None
    daily: int | None = None
    reserve: float = 0.1

    @property
    def any(self) -> bool:
        return bool(self.hourly or self.daily)

    def for_account(self, hourly: int | None, daily: int | None) -> Caps:
        """These caps with an account's own hourly and daily figures."""
        if (hourly, daily) == (self.hourly, self.daily):
            return self
        return Caps(hourly=hourly, daily=daily, reserve=self.reserve)

    def reserved(self, cap: int | None) -> int:
        """Messages of ``cap`` that only transactional mail may use."""
        return math.ceil((cap or 0) * self.reserve)


class CapLimiter(RedisStore):
    """Takes messages from an account's hourly and daily windows, fleet-wide."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, caps: Caps, url: str = "redis"
    ) -> None:
        super().__init__(client, keys, url=url)
        self.caps = caps
        self._take = client.register_script(_TAKE)
        self._room = client.register_script(_ROOM)

    @translated("count messages against the volume caps")
    def take(
        self,
        account: str,
        lane: Lane,
        amount: int,
        now: float | None = None,
        *,
        caps: Caps | None = None,
    ) -> float:
        """Take ``amount`` messages for ``account``; 0 when taken, else seconds to wait.

        ``caps``: the account's own caps (default: the top-level ones).
        """
        caps = caps or self.caps
        if not caps.any or amount <= 0:
            return 0.0
        wait = self._take(
            keys=[self.keys.cap(account, "hour"), self.keys.cap(account, "day")],
            args=[
                time.time() if now is None else now,
                amount,
                caps.hourly or 0,
                caps.daily or 0,
                caps.reserved(caps.hourly),
                caps.reserved(caps.daily),
                lane,
            ],
        )
        return float(wait)

    @translated("read what is left of the volume caps")
    def room(
        self, account: str, lane: Lane, now: float | None = None, *, caps: Caps | None = None
    ) -> tuple[int | None, float]:
        """Messages ``account`` may still hand over in ``lane`` (None: no cap), and the
        seconds until the tighter window frees some."""
        caps = caps or self.caps
        if not caps.any:
            return None, 0.0
        left, wait = self._room(
            keys=[self.keys.cap(account, "hour"), self.keys.cap(account, "day")],
            args=[
                time.time() if now is None else now,
                caps.hourly or 0,
                caps.daily or 0,
                caps.reserved(caps.hourly),
                caps.reserved(caps.daily),
                lane,
            ],
        )
        return (None if int(left) < 0 else int(left)), float(wait)
