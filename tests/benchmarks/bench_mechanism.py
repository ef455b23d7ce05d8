"""The coalescing mechanism head to head: mailqueue's outbox against a celery-batches task.

Run: ``python tests/benchmarks/bench_mechanism.py [--quick]`` (needs
``pip install --no-deps celery-batches``: it declares ``celery<5.7`` but works on 5.7).

(A) mailqueue as is: ``send_email.delay`` in a loop; two
    ``celery -A mailqueue worker --concurrency 2``.
(B) ``batches_worker.deliver``, a celery-batches task (``flush_every=500``,
    ``flush_interval`` 0.01 s, and 1 s as a second run; unlimited prefetch)
    whose flush builds payloads with ``build_payload``, coalesces them (at
    most 500 per call) and posts them with mailqueue's ``Transport`` and
    ``FleetRateLimiter``; the producer validates with ``build_payload`` and
    calls ``deliver.delay``; two
    ``celery -A batches_worker worker --concurrency 2``.

B records no status and does not retry past the transport's short retries:
that is less work than A does, so it favours B.

Both run in the same process against the same private redis-server:

- throughput: messages enqueued one at a time against a LocalMailtrap that
  enforces 150 requests per 10 s and answers after 100 ms; the clock stops when
  LocalMailtrap has accepted every message (unique subjects). API calls, 429s,
  duplicates and losses come from LocalMailtrap; worker CPU (main process and
  pool children, from /proc) is divided by the messages;
- a lone message on an idle queue: enqueue until LocalMailtrap accepted it,
  against a second LocalMailtrap with no added latency (the time the
  mechanism adds is what is measured), with a pause between rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from harness import Stack, latency_row, machine, process_tree_cpu, wait_final

import mailqueue
from mailqueue.core.payload import build_payload
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap, RedisServer
from mailqueue.testing.worker import WorkerProcess, settings_env

HERE = Path(__file__).resolve().parent
RATE = (150, 10.0)
LATENCY = 0.1
WORKERS = 2
CONCURRENCY = 2
# celery-batches' flush_interval: the small one asked for, and one long enough to fill batches.
FLUSH_INTERVALS = (0.01, 1.0)
IDLE = 0.1  # between lone messages: the outbox drain exits, the batches timer finds nothing

# Enqueues one message; returns its send id when the mechanism records statuses.
Producer = Callable[[dict[str, Any]], "str | None"]


@dataclass
class Throughput:
    label: str
    messages: int
    enqueue_seconds: float
    seconds: float
    calls: int
    rate_limited: int
    duplicates: int
    lost: int
    cpu_ms: float

    def show(self) -> None:
        print(
            f"{self.label:<34} {self.messages:>6,} msgs  {self.seconds:6.2f} s  "
            f"{self.messages / self.seconds:>8,.1f} msg/s  (enqueue {self.enqueue_seconds:5.2f} s)"
            f"  {self.calls:>4} API calls  {self.rate_limited} x 429  "
            f"{self.duplicates} duplicates  {self.lost} lost  "
            f"worker CPU {self.cpu_ms:.3f} ms/msg"
        )


def message(index: int) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [f"customer{index}@example.com"],
        "subject": f"Order {index} confirmed",
        "text": "Thank you for your order.",
    }


# -- the two mechanisms ------------------------------------------------------


@contextlib.contextmanager
def mailqueue_side(settings: Settings) -> Iterator[tuple[list[int], Producer]]:
    """Two mailqueue workers; yields their pids and a producer."""
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(WorkerProcess(settings, concurrency=CONCURRENCY))
            for _ in range(WORKERS)
        ]
        pids = [worker.process.pid for worker in workers if worker.process is not None]

        def produce(msg: dict[str, Any]) -> str | None:
            return str(mailqueue.send_email.delay(msg).id)

        yield pids, produce


def batches_side(flush_interval: float) -> Callable[[Settings], Any]:
    """The celery-batches side with workers flushing every ``flush_interval`` seconds."""
    return lambda settings: _batches_side(settings, flush_interval)


@contextlib.contextmanager
def _batches_side(
    settings: Settings, flush_interval: float
) -> Iterator[tuple[list[int], Producer]]:
    # The producer's app reads its broker at import; one redis-server serves the whole run.
    os.environ["MAILQUEUE_BROKER_URL"] = settings.broker_url
    import batches_worker

    if batches_worker.app.conf.broker_url != settings.broker_url:
        raise RuntimeError("batches_worker was imported with another broker")

    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(_batches_process(settings, i, flush_interval))
            for i in range(WORKERS)
        ]

        def produce(msg: dict[str, Any]) -> str | None:
            build_payload(msg, settings)  # validation in the producer, as mailqueue does
            batches_worker.deliver.delay(msg)
            return None

        yield [process.pid for process in processes], produce


@contextlib.contextmanager
def _batches_process(
    settings: Settings, index: int, flush_interval: float
) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryFile() as log:
        ready = Path(scratch) / "ready"
        env = {**os.environ, **settings_env(settings), "BENCH_READY_FILE": str(ready)}
        env["BENCH_FLUSH_INTERVAL"] = repr(flush_interval)
        env.pop("CELERY_CONFIG_MODULE", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "batches_worker", "worker",
             "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING",
             "--hostname", f"bench-batches-{index}-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"batches worker did not start:\n{log.read().decode()}")
                time.sleep(0.05)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
            log.seek(0)
            tail = log.read().decode(errors="replace").strip()
            if any(sign in tail for sign in ("Traceback", "ERROR", "dropped")):
                print(f"    [batches worker {index} log]\n{tail[-3000:]}")


# -- measurements ------------------------------------------------------------


def wait_accepted(mailtrap: LocalMailtrap, count: int, timeout: float) -> float:
    """Poll until ``count`` distinct subjects were accepted; returns the time (monotonic)."""
    seen: set[Any] = set()
    done = 0
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        accepted = mailtrap.accepted[done:]
        done += len(accepted)
        seen.update(m.payload.get("subject") for m in accepted)
        time.sleep(0.01)
    return time.monotonic()


def throughput(env: Stack, side: Callable[[Settings], Any], label: str, count: int) -> Throughput:
    settings = env.settings(rate_limit="150/10s")
    env.client.flushdb()
    with side(settings) as (pids, produce):
        time.sleep(1.0)  # let start-up work settle before sampling CPU
        env.mailtrap.reset()
        cpu_before = sum(process_tree_cpu(pid) for pid in pids)
        started = time.monotonic()
        ids = [produce(message(i)) for i in range(count)]
        enqueued = time.monotonic()
        ended = wait_accepted(env.mailtrap, count, timeout=120)
        cpu = sum(process_tree_cpu(pid) for pid in pids) - cpu_before
        time.sleep(0.5)  # a late duplicate would arrive here
        send_ids = [send_id for send_id in ids if send_id is not None]
        lost_by_status = None
        if send_ids:
            _, states = wait_final(env.client, send_ids, timeout=30)
            lost_by_status = sum(1 for state in states.values() if state != "sent")
    subjects = Counter(m.payload.get("subject") for m in env.mailtrap.accepted)
    stats = env.mailtrap.stats
    lost = count - len(subjects)
    if lost_by_status is not None:
        lost = max(lost, lost_by_status)
    return Throughput(
        label=label,
        messages=count,
        enqueue_seconds=enqueued - started,
        seconds=ended - started,
        calls=stats.requests,
        rate_limited=stats.rate_limited,
        duplicates=sum(n - 1 for n in subjects.values() if n > 1),
        lost=lost,
        cpu_ms=1000 * cpu / count,
    )


def lone_latencies(env: Stack, side: Callable[[Settings], Any], rounds: int) -> list[float]:
    settings = env.settings()
    env.client.flushdb()
    latencies = []
    with side(settings) as (_, produce):
        for i in range(rounds + 5):  # the first five warm up the pools' HTTP sessions
            before = len(env.mailtrap.accepted)
            started = time.perf_counter()
            produce(message(i))
            while len(env.mailtrap.accepted) == before:
                time.sleep(0.0005)
            if i >= 5:
                latencies.append(time.perf_counter() - started)
            time.sleep(IDLE)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    options = parser.parse_args()
    count, rounds = (2_000, 20) if options.quick else (10_000, 50)

    print(f"machine: {machine()}; LocalMailtrap {RATE[0]}/{RATE[1]:g}s, {LATENCY * 1000:.0f} ms")
    print(f"workers: {WORKERS} x `celery worker --concurrency {CONCURRENCY}` on each side")
    print("B records no status and never retries past the transport: this favours B")
    with (
        RedisServer() as server,
        LocalMailtrap(rate_limit=RATE, latency=LATENCY) as limited,
        LocalMailtrap() as plain,
    ):
        client = redis.Redis.from_url(server.url)
        busy, idle = Stack(server.url, limited, client), Stack(server.url, plain, client)
        a = throughput(busy, mailqueue_side, "(A) mailqueue outbox", count)
        a.show()
        results = [a]
        for interval in FLUSH_INTERVALS:
            b = throughput(
                busy, batches_side(interval), f"(B) celery-batches, {interval:g} s", count
            )
            b.show()
            results.append(b)
        for b in results[1:]:
            print(f"    A / {b.label}: {b.seconds / a.seconds:.2f}x the throughput")
        lone = {"(A) mailqueue outbox": lone_latencies(idle, mailqueue_side, rounds)}
        for interval in FLUSH_INTERVALS:
            label = f"(B) celery-batches, {interval:g} s"
            lone[label] = lone_latencies(idle, batches_side(interval), rounds)
        client.close()
    print(f"lone message on an idle queue, enqueue -> accepted, {rounds} rounds, no added latency")
    for label, values in lone.items():
        print(latency_row(label, values, width=34))


if __name__ == "__main__":
    main()
