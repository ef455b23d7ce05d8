"""How fast an uncontended FleetRateLimiter.acquire is, against a plain Redis INCR loop.

Run: ``python tests/benchmarks/bench_ratelimit.py [--seconds 2] [--redis-url URL]``.
Without ``--redis-url`` a private redis-server is started. Prints acquisitions
per second and Redis round trips per acquisition, then the same for INCR.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import redis

from mailqueue.settings import RateLimit, Settings
from mailqueue.store.ratelimit import FleetRateLimiter
from mailqueue.testing.redis_server import RedisServer


class CountingConnection(redis.Connection):
    """A connection that counts the replies it reads: one per round trip."""

    replies = 0

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.replies += 1
        return super().read_response(*args, **kwargs)


def measure(label: str, operation: Callable[[], object], seconds: float) -> None:
    operation()  # loads the script, opens the connection
    CountingConnection.replies = 0
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        operation()
        calls += 1
    elapsed = time.perf_counter() - started
    print(
        f"{label:<32} {calls / elapsed:>10,.0f} ops/s  "
        f"{1e6 * elapsed / calls:>7.1f} µs/op  "
        f"{CountingConnection.replies / calls:.2f} round trips/op"
    )


def run(url: str, seconds: float) -> None:
    client = redis.Redis.from_url(url, connection_class=CountingConnection)
    client.flushdb()
    settings = Settings(api_token="benchmark", rate_limit=RateLimit(10**9, 10.0))
    limiter = FleetRateLimiter(client, settings)
    measure("FleetRateLimiter.acquire", limiter.acquire, seconds)
    # The log keeps every grant of the last period: start the next run empty.
    client.flushdb()
    measure("FleetRateLimiter.try_acquire", limiter.try_acquire, seconds)
    measure("baseline: INCR", lambda: client.incr("bench:incr"), seconds)
    client.flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--redis-url", help="an existing Redis to use (its db is flushed)")
    options = parser.parse_args()
    if options.redis_url:
        run(options.redis_url, options.seconds)
        return
    with RedisServer() as server:
        run(server.url, options.seconds)


if __name__ == "__main__":
    main()
