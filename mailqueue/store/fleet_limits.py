"""The rate limits the workers send under, as they announce them, and each window's use.

A dashboard or command runs with settings of its own (perhaps no token, another
rate): its own limiter says nothing of the fleet's. So each worker process notes
every limiter it sends through (the token's key, never the token; the limit;
the account) in one small hash, again every few minutes while it sends, and a
reader counts each one's window from the limiter's own log in Redis.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from mailqueue.core.routing import Route
from mailqueue.settings import RateLimit
from mailqueue.store.keys import Keys
from mailqueue.store.ratelimit import FleetRateLimiter

__all__ = ["ANNOUNCE_EVERY", "SHOWN_FOR", "LimitNotices", "fleet_limits"]

log = logging.getLogger("mailqueue.worker")

# A process notes a limiter again after this many seconds of sending through it...
ANNOUNCE_EVERY = 300.0
# ...and a reader shows the limiters noted this recently: a rotated token drops out.
SHOWN_FOR = 3600.0


class LimitNotices:
    """One process's notes of the limiters it sends through."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._key = keys.limiters
        self._noted: dict[str, float] = {}

    def note(self, route: Route) -> None:
        """Note ``route``'s limiter, unless this process did so a short while ago."""
        now = time.monotonic()
        if now - self._noted.get(route.limiter_key, -ANNOUNCE_EVERY) < ANNOUNCE_EVERY:
            return
        entry = {
            "amount": route.rate_limit.amount,
            "period": route.rate_limit.period,
            "account": route.account,
            "at": time.time(),
        }
        try:
            self._redis.hset(self._key, route.limiter_key, json.dumps(entry))
        except redis.RedisError as exc:  # only a display misses it; sending goes on
            log.debug("limiter not noted: %s", type(exc).__name__)
            return
        self._noted[route.limiter_key] = now


def fleet_limits(
    client: redis.Redis, keys: Keys, now: float | None = None
) -> list[dict[str, Any]]:
    """The limiters workers noted within ``SHOWN_FOR``: limit, account, requests in the window.

    Each as ``{"token_key", "account", "limit", "period", "used", "cooldown"}``,
    the busiest first.
    """
    now = time.time() if now is None else now
    raw: dict[Any, Any] = client.hgetall(keys.limiters)  # type: ignore[assignment]
    limits = []
    for field, value in raw.items():
        token_key = field.decode() if isinstance(field, bytes) else str(field)
        try:
            entry = json.loads(value)
            limit = RateLimit(int(entry["amount"]), float(entry["period"]))
            at = float(entry["at"])
        except (ValueError, KeyError, TypeError):
            continue
        if now - at > SHOWN_FOR:
            continue
        route = Route(
            stream="transactional",
            account=entry.get("account"),
            base_url="",
            token="",
            sandbox_id=None,
            rate_limit=limit,
            limiter_key=token_key,
        )
        limiter = FleetRateLimiter(client, route, key_space=keys)
        limits.append(
            {
                "token_key": token_key,
                "account": entry.get("account"),
                "limit": limit.amount,
                "period": limit.period,
                "used": limiter.window_use(),
                "cooldown": round(limiter.cooldown_remaining(), 1),
            }
        )
    limits.sort(key=lambda item: (-item["used"] / max(item["limit"], 1), item["token_key"]))
    return limits
