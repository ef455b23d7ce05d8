"""End-to-end throughput under Mailtrap's rate limit: coalesced sends and a merge-data campaign.

Run: ``python tests/benchmarks/bench_end_to_end.py [--quick]``.

Everything is real and local: a private redis-server, a LocalMailtrap that
enforces 150 requests per 10 s and answers after 100 ms, and two Celery worker
processes (``celery -A mailqueue worker --concurrency 2`` twice, so four pool
processes in all). Figures:

(a) individually enqueued messages (``send_email.delay`` in a loop), coalesced
    into ``batch`` calls, against the same with ``MAILQUEUE_COALESCE=false``
    (one request per message, capped by the limit at 15 msg/s);
(b) one merge-data batch send to 100,000 recipients against the floor set by
    the rate limit (200 calls of 500: the first 150 in the first window, the
    last 50 no earlier than 10 s later).

Each run counts API calls, 429s, duplicates (a unique subject or merge value
per message, counted in what LocalMailtrap accepted) and losses (sends not
final-sent when the run ends).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from harness import Stack, machine, stack, wait_final

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing.worker import WorkerProcess

RATE = (150, 10.0)
LATENCY = 0.1
TEMPLATE = "7f1b6a36-0000-4000-8000-00000000c0de"


@dataclass
class Run:
    label: str
    messages: int
    enqueue_seconds: float
    seconds: float
    calls: int
    rate_limited: int
    duplicates: int
    lost: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def show(self) -> None:
        print(
            f"{self.label:<44} {self.messages:>7,} msgs  {self.seconds:7.2f} s  "
            f"{self.rate:>9,.1f} msg/s  (enqueue {self.enqueue_seconds:5.2f} s)  "
            f"{self.calls:>5} API calls  {self.rate_limited} x 429  "
            f"{self.duplicates} duplicates  {self.lost} lost"
        )


@contextlib.contextmanager
def workers(settings: Settings, count: int = 2) -> Iterator[list[WorkerProcess]]:
    with contextlib.ExitStack() as stack_:
        yield [stack_.enter_context(WorkerProcess(settings, concurrency=2)) for _ in range(count)]


def message(index: int) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [f"customer{index}@example.com"],
        "subject": f"Order {index} confirmed",
        "text": "Thank you for your order.",
    }


def individual_sends(env: Stack, count: int, *, coalesce: bool, timeout: float) -> Run:
    settings = env.settings(rate_limit="150/10s", coalesce=coalesce)
    env.client.flushdb()
    with workers(settings):
        env.mailtrap.reset()
        started = time.monotonic()
        ids = [mailqueue.send_email.delay(message(i)).id for i in range(count)]
        enqueued = time.monotonic()
        ended, states = wait_final(env.client, ids, timeout)
    stats = env.mailtrap.stats
    subjects = Counter(m.payload.get("subject") for m in env.mailtrap.accepted)
    return Run(
        label="(a) delay() loop, " + ("coalesced" if coalesce else "one request per message"),
        messages=count,
        enqueue_seconds=enqueued - started,
        seconds=ended - started,
        calls=stats.requests,
        rate_limited=stats.rate_limited,
        duplicates=sum(n - 1 for n in subjects.values() if n > 1),
        lost=sum(1 for state in states.values() if state != "sent"),
    )


def campaign(env: Stack, recipients: int, timeout: float) -> Run:
    settings = env.settings(rate_limit="150/10s")
    env.client.flushdb()
    addresses = [f"reader{i}@example.com" for i in range(recipients)]
    payload = {
        "from_email": "News <news@example.com>",
        "to": addresses,
        "template_id": TEMPLATE,
        "merge_global_data": {"issue": "42"},
        "merge_data": {address: {"n": str(i)} for i, address in enumerate(addresses)},
    }
    with workers(settings):
        env.mailtrap.reset()
        started = time.monotonic()
        send_id = mailqueue.enqueue(payload)
        enqueued = time.monotonic()
        ended, states = wait_final(env.client, [send_id], timeout)
    stats = env.mailtrap.stats
    values = Counter(
        m.payload.get("template_variables", {}).get("n") for m in env.mailtrap.accepted
    )
    record: Mapping[str, Any] = mailqueue.get_status(send_id) or {}
    sent = sum(1 for r in record.get("recipients", {}).values() if r["status"] == "queued")
    return Run(
        label="(b) merge-data campaign, one enqueue()",
        messages=recipients,
        enqueue_seconds=enqueued - started,
        seconds=ended - started,
        calls=stats.requests,
        rate_limited=stats.rate_limited,
        duplicates=sum(n - 1 for n in values.values() if n > 1),
        lost=recipients - sent if states[send_id] != "missing" else recipients,
    )


def campaign_floor(recipients: int) -> float:
    """The least time the limit allows: calls past the first window wait for later windows."""
    amount, period = RATE
    calls = -(-recipients // 500)
    return ((calls - 1) // amount) * period + LATENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    options = parser.parse_args()
    sizes = (2_000, 200, 20_000) if options.quick else (10_000, 300, 100_000)
    singles, baseline, recipients = sizes

    print(f"machine: {machine()}; LocalMailtrap {RATE[0]}/{RATE[1]:g}s, {LATENCY * 1000:.0f} ms")
    print("workers: 2 x `celery -A mailqueue worker --concurrency 2`")
    with stack(rate_limit=RATE, latency=LATENCY) as env:
        coalesced = individual_sends(env, singles, coalesce=True, timeout=120)
        coalesced.show()
        single = individual_sends(env, baseline, coalesce=False, timeout=120)
        single.show()
        print(
            f"    coalescing speed-up: {coalesced.rate / single.rate:,.1f}x "
            f"(steady-state cap without coalescing: {RATE[0] / RATE[1]:g} msg/s)"
        )
        bulk = campaign(env, recipients, timeout=180)
        bulk.show()
        floor = campaign_floor(recipients)
        steady = -(-recipients // 500) / (RATE[0] / RATE[1])
        print(
            f"    floors for {-(-recipients // 500)} calls: {floor:.1f} s from an empty window, "
            f"{steady:.1f} s at the steady rate; campaign took {bulk.seconds / floor:.2f}x "
            f"and {bulk.seconds / steady:.2f}x"
        )


if __name__ == "__main__":
    main()
