"""Lanes under load: lone transactional sends during campaigns, campaign times, the limit's floor.

Run: ``python tests/benchmarks/bench_lanes.py [--full] [--part PART ...]``.

Everything is real and local, on one machine: a private redis-server, a
LocalMailtrap enforcing 150 requests per 10 s per token and answering after
100 ms, one Celery worker (``celery -A mailqueue worker --concurrency 2``),
and the producer in this process. Times run from the first enqueue.

(a) Ten lone transactional sends (a password reset each), one a second, from
    ``send_email.delay`` to ``sent``, made by a process of their own (as a
    web application's would be) from the moment the campaign's first call
    reaches the local Mailtrap: p50, p99 and max on an idle queue (the
    baseline), during a merge-data bulk campaign (100,000 recipients; 1,000,000
    with ``--full``), and during individual bulk messages from one
    ``enqueue_many`` (20,000; 100,000 with ``--full``).
(b) Each campaign's time to its last accepted message, alone and with those
    lone sends running.
(c) The 100,000-recipient campaign against the rate limit's floor: its enqueue
    time plus 10.2 s (200 calls: 150 at once, the last 50 ten seconds later,
    each answered in 100 ms).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import redis
from harness import Stack, machine, percentile, stack, wait_final

import mailqueue
from mailqueue.client import default
from mailqueue.settings import Settings
from mailqueue.store.groups import SendIds, get_group
from mailqueue.store.keys import Keys
from mailqueue.testing.worker import WorkerProcess

RATE = (150, 10.0)
LATENCY = 0.1
TEMPLATE = "7f1b6a36-0000-4000-8000-00000000c0de"
LONE_SENDS = 10


@dataclass
class Run:
    label: str
    campaign_seconds: float = 0.0
    enqueue_seconds: float = 0.0
    calls: int = 0
    rate_limited: int = 0
    lone: list[float] = field(default_factory=list)

    def lone_row(self) -> str:
        if not self.lone:
            return ""
        ms = [value * 1000 for value in self.lone]
        p50, p99 = statistics.median(ms), percentile(ms, 0.99)
        return (
            f"    lone sends: p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"
            f"   max {max(ms):7.1f} ms   ({len(ms)} sends)"
        )

    def show(self) -> None:
        print(self.label)
        if self.campaign_seconds:
            print(
                f"    campaign: {self.campaign_seconds:7.2f} s"
                f" (enqueue {self.enqueue_seconds:.2f} s)"
                f"   {self.calls} API calls   {self.rate_limited} x 429"
            )
        if self.lone:
            print(self.lone_row())


def reset() -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": ["customer@example.com"],
        "subject": "Reset your password",
        "text": "Follow the link to reset it.",
    }


def merge_campaign(recipients: int) -> list[dict[str, Any]]:
    addresses = [f"reader{i}@example.com" for i in range(recipients)]
    return [
        {
            "from_email": "News <news@example.com>",
            "to": addresses,
            "template_id": TEMPLATE,
            "merge_global_data": {"issue": "42"},
            "merge_data": {address: {"n": str(i)} for i, address in enumerate(addresses)},
            "stream": "bulk",
        }
    ]


def individual_campaign(count: int) -> list[dict[str, Any]]:
    return [
        {
            "from_email": "News <news@example.com>",
            "to": [f"reader{i}@example.com"],
            "template_id": TEMPLATE,
            "merge_global_data": {"n": str(i)},
            "stream": "bulk",
        }
        for i in range(count)
    ]


def lone_sends(settings: Settings, go: Event, results: Queue[list[float]]) -> None:
    """One transactional send a second, once ``go`` is set; each one's time from delay() to sent.

    Runs in a process of its own, as a web application's sends would: it
    shares no interpreter lock with the producer or the local Mailtrap.
    """
    mailqueue.configure(settings)
    client = redis.Redis.from_url(settings.broker_url)
    go.wait()
    start = time.monotonic()
    times: list[float] = []
    for index in range(LONE_SENDS):
        began = time.monotonic()
        send_id = mailqueue.send_email.delay(reset()).id
        while client.hget(Keys().send(send_id), "state") != b"sent":
            if time.monotonic() - began > 60:
                times.append(float("inf"))
                break
            time.sleep(0.002)
        else:
            times.append(time.monotonic() - began)
        time.sleep(max(0.0, start + index + 1 - time.monotonic()))
    results.put(times)


def go_once_delivering(env: Stack, go: Event, stop: threading.Event) -> None:
    """Set ``go`` when the local Mailtrap sees the campaign's first call (or at once without one).

    The sends of ``enqueue_many`` are delivered while it still queues more,
    a merge-data campaign only once it is queued: either way the lone sends
    start when there is bulk work in flight to wait behind.
    """
    while not stop.is_set() and env.mailtrap.stats.requests == 0:
        time.sleep(0.01)
    go.set()


def run(
    env: Stack,
    label: str,
    campaign: Callable[[], list[dict[str, Any]]] | None,
    *,
    with_lone_sends: bool,
    timeout: float,
) -> Run:
    settings = env.settings(rate_limit="150/10s", bulk_api_url=env.mailtrap.bulk_url)
    env.client.flushdb()
    messages = campaign() if campaign is not None else []
    result = Run(label)
    spawn = multiprocessing.get_context("spawn")
    go, times = spawn.Event(), spawn.Queue()
    sender = spawn.Process(target=lone_sends, args=(settings, go, times), daemon=True)
    if with_lone_sends:
        sender.start()  # it waits for ``go``: its start-up is not measured
    with WorkerProcess(settings, concurrency=2):
        # Let the start-up drain finish so the first send meets an idle queue.
        time.sleep(1.0)
        env.mailtrap.reset()
        stop = threading.Event()
        watcher = threading.Thread(target=go_once_delivering, args=(env, go, stop))
        if not messages:
            go.set()
        elif with_lone_sends:
            watcher.start()
        started = time.monotonic()
        ids = SendIds()
        if messages:
            ids = mailqueue.enqueue_many(messages)
            result.enqueue_seconds = time.monotonic() - started
            # What a producer holds after queueing it is no concern of the workers'.
            messages.clear()
        if ids:
            ended = wait_campaign(env, ids, timeout)
            result.campaign_seconds = ended - started
            _, states = wait_final(env.client, ids, 0)
            unsent = sum(1 for state in states.values() if state != "sent")
            if unsent:
                print(f"    ! {unsent} campaign sends not sent after {timeout:g} s")
        stop.set()
        if with_lone_sends:
            result.lone = times.get(timeout=LONE_SENDS * 61 + 60)
            sender.join(timeout=10)
    stats = env.mailtrap.stats
    result.calls = stats.requests - len(result.lone)
    result.rate_limited = stats.rate_limited
    return result


def wait_campaign(env: Stack, ids: SendIds, timeout: float) -> float:
    """When every send of ``ids`` became final (to 20 ms), or the deadline passed.

    Many sends are followed through their group's counts, one read a poll:
    reading 100,000 records every few milliseconds would take the CPU that
    the campaign and the lone sends are measured with.
    """
    deadline = time.monotonic() + timeout
    if len(ids) == 1 or ids.group_id is None:
        ended, _ = wait_final(env.client, ids, timeout, poll=0.02)
        return float(ended)
    rt = default()
    while time.monotonic() < deadline:
        progress = get_group(ids.group_id, status=rt.store)
        if progress is not None and progress.done:
            break
        time.sleep(0.02)
    return time.monotonic()


def floor_seconds(calls: int) -> float:
    amount, period = RATE
    return ((calls - 1) // amount) * period + LATENCY * 2


PARTS = ("merge", "individual", "floor")


def compare(idle: Run, alone: Run, mixed: Run) -> None:
    """The campaign with lone sends against alone, and the lone sends against the goals."""
    ratio = mixed.campaign_seconds / alone.campaign_seconds
    after = (mixed.campaign_seconds - mixed.enqueue_seconds) / (
        alone.campaign_seconds - alone.enqueue_seconds
    )
    p50, worst = statistics.median(mixed.lone), max(mixed.lone)
    print(
        f"    with lone sends the campaign took {ratio:.3f}x its time alone"
        f" ({after:.3f}x counted from the end of its enqueue; goal: at most 1.10x)"
    )
    print(
        f"    lone sends: p50 {p50 * 1000:.0f} ms (goal: at most 500 ms), max {worst * 1000:.0f} ms"
        f" (goal: at most 1,000 ms), against p50 {statistics.median(idle.lone) * 1000:.0f} ms idle"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="the full sizes: 1,000,000 recipients, 100,000 individual messages",
    )
    parser.add_argument(
        "--part",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable): merge, individual (each alone and with lone"
        " sends, after the idle baseline), floor (the 100,000-recipient campaign)",
    )
    options = parser.parse_args()
    parts = options.part or PARTS
    big, individual = (1_000_000, 100_000) if options.full else (100_000, 20_000)
    campaigns: dict[str, tuple[str, Callable[[], list[dict[str, Any]]], float]] = {
        "merge": (
            f"{big:,}-recipient merge-data bulk campaign",
            lambda: merge_campaign(big),
            60 + big / 500 / 15 * 1.5,
        ),
        "individual": (
            f"{individual:,} individual bulk messages (enqueue_many)",
            lambda: individual_campaign(individual),
            60 + individual / 500 / 15 * 1.5,
        ),
    }

    print(f"machine: {machine()}; LocalMailtrap {RATE[0]}/{RATE[1]:g}s per token, ")
    print(f"{LATENCY * 1000:.0f} ms latency; one worker: `celery -A mailqueue worker -c 2`")
    with stack(rate_limit=RATE, latency=LATENCY) as env:
        chosen = [campaigns[part] for part in PARTS if part in parts and part in campaigns]
        if chosen:
            idle = run(env, "(a) lone sends, idle queue", None, with_lone_sends=True, timeout=60)
            idle.show()
        for name, build, timeout in chosen:
            alone = run(env, f"(b) {name}, alone", build, with_lone_sends=False, timeout=timeout)
            alone.show()
            mixed = run(
                env, f"(a) {name}, with lone sends", build, with_lone_sends=True, timeout=timeout
            )
            mixed.show()
            compare(idle, alone, mixed)
        if "floor" in parts:
            floor_run = run(
                env,
                "(c) 100,000-recipient merge-data campaign",
                lambda: merge_campaign(100_000),
                with_lone_sends=False,
                timeout=120,
            )
            floor_run.show()
            floor = floor_run.enqueue_seconds + floor_seconds(200)
            print(
                f"    floor: enqueue {floor_run.enqueue_seconds:.2f} s + {floor_seconds(200):.1f} s"
                f" = {floor:.2f} s; the campaign took {floor_run.campaign_seconds / floor:.2f}x"
                " the floor (goal: at most 1.3x)"
            )


if __name__ == "__main__":
    main()
