"""Producer cost: send_email.delay against a plain Celery task's delay on the same Redis.

Run: ``python tests/benchmarks/bench_producer.py [--quick]``.

A private redis-server serves as broker for both. No worker runs, so only the
producer is measured. ``send_email.delay`` validates the message, builds its
payload, writes the status record and the outbox entry in one transaction,
and publishes a Celery wake-up only when no drain is running and no other
producer's wake-up is on its way; it is measured both ways: with a drain
announced as running (the steady state under load: no publish) and with none
(the first call publishes; with no worker here to clear the marker, one call
in every five seconds publishes again). The baseline
is ``delay`` of a one-line task on a separate Celery app with the same broker,
which publishes the message dict as it is and validates nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from harness import machine, percentile, stack

import mailqueue
from mailqueue.store.keys import Keys

MESSAGE = {
    "from_email": "Shop <shop@example.com>",
    "to": ["Alice <alice@example.com>"],
    "subject": "Your order",
    "text": "It ships today.",
    "html": "<p>It ships today.</p>",
    "tags": ["orders"],
    "metadata": {"order": "1234"},
}


def plain_task(broker_url: str) -> Any:
    app = Celery("bench_plain", broker=broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True)

    @app.task(name="bench.plain_send")
    def send(message: dict[str, Any]) -> None:
        return None

    return send


def measure(label: str, call: Callable[[], object], count: int) -> None:
    for _ in range(min(200, count)):
        call()  # connections, scripts, imports
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    print(
        f"{label:<48} {count / elapsed:>9,.0f} msg/s  "
        f"p50 {1e6 * percentile(latencies, 0.5):>7,.0f} µs  "
        f"p99 {1e6 * percentile(latencies, 0.99):>7,.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    options = parser.parse_args()
    count = 2_000 if options.quick else 20_000

    print(f"machine: {machine()}; {count:,} calls each, one at a time")
    with stack() as env:
        env.settings()
        client = env.client

        def drain_running() -> None:
            client.zadd(Keys().drains, {"bench-drain": int((time.time() + 3600) * 1000)})

        drain_running()
        measure(
            "send_email.delay, a drain running",
            lambda: mailqueue.send_email.delay(MESSAGE),
            count,
        )
        client.flushdb()
        measure(
            "send_email.delay, no drain (one wake-up on its way)",
            lambda: mailqueue.send_email.delay(MESSAGE),
            count,
        )
        client.flushdb()
        send = plain_task(env.redis_url)
        measure("baseline: plain Celery task .delay", lambda: send.delay(MESSAGE), count)
        client.flushdb()


if __name__ == "__main__":
    main()
