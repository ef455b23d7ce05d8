"""Steady transactional traffic: each message's time from ``delay`` to Mailtrap's acceptance.

Run: ``python tests/benchmarks/bench_steady.py [--quick] [--rates 300,1000] [--seconds 30]``
(``--commands`` also prints which Redis commands a message costs).

Everything is real and local, on one machine: a private redis-server, a
LocalMailtrap enforcing 150 requests per 10 s per token and answering after
100 ms, one Celery worker (``celery -A mailqueue worker --concurrency 2``)
with default settings, and producer processes calling ``send_email.delay``
at a fixed rate (each its share), as web applications would.

For each rate it prints p50, p99 and max of the time from ``delay`` to the
moment the LocalMailtrap accepted the message (seen by a watcher polling
its list every 2 ms), the API calls and messages per call, 429 answers, the
longest stretch in which nothing was accepted while messages waited, and
the Redis server's own work per message (``INFO commandstats`` and
``INFO cpu``, idle polling included), and after each rate what a bare
PING at that rate costs the server: the floor of a message, whose enqueue
is one round trip, and how many such PINGs a message costs. Beside them, in the same run: the
idle baseline (one message at a time) and a burst of lone sends enqueued as
fast as the producers can, timed from the first enqueue to the last
acceptance.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import redis
from harness import Stack, machine, percentile, stack

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing.worker import WorkerProcess

RATE = (150, 10.0)
LATENCY = 0.1
# What one producer process is asked for at most; more processes share higher rates.
PER_PRODUCER = 600.0


def message(tag: str, sent_at: float) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": ["customer@example.com"],
        "subject": "Your order",
        "text": "It ships today.",
        "metadata": {"bench": tag, "t": repr(sent_at)},
    }


def produce(
    settings: Settings,
    tag: str,
    rate: float,
    count: int,
    go: Event,
    start_at: Queue[float],
    done: Queue[int],
) -> None:
    """``count`` sends at ``rate`` a second (as fast as possible for rate 0), from ``go``."""
    mailqueue.configure(settings)
    mailqueue.send_email.delay(message("warm-up", time.monotonic()))  # connections made
    go.wait()
    start = start_at.get()
    for index in range(count):
        if rate > 0:
            wait = start + index / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        mailqueue.send_email.delay(message(tag, time.monotonic()))
    done.put(count)


@dataclass
class Watcher:
    """Stamps each message the LocalMailtrap accepts with the time it was first seen."""

    env: Stack
    tag: str
    stamps: list[tuple[float, float]] = field(default_factory=list)  # (sent at, accepted at)
    _seen: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._seen = len(self.env.mailtrap.accepted)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.002)

    def poll(self) -> None:
        accepted = self.env.mailtrap.accepted
        now = time.monotonic()
        end = len(accepted)
        for item in accepted[self._seen : end]:
            variables = item.payload.get("custom_variables") or {}
            if variables.get("bench") == self.tag:
                self.stamps.append((float(variables["t"]), now))
        self._seen = end

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()


@dataclass
class Result:
    label: str
    latencies: list[float]
    calls: int
    messages: int
    rate_limited: int
    longest_gap: float
    first_to_last: float
    commands: float
    redis_cpu_us: float
    expected: int

    def show(self) -> None:
        ms = [value * 1000 for value in self.latencies]
        missing = self.expected - len(ms)
        print(self.label)
        if ms:
            print(
                f"    p50 {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms"
                f"   max {max(ms):7.1f} ms   ({len(ms)} messages"
                + (f", {missing} NOT accepted" if missing else "")
                + ")"
            )
        per_call = self.messages / self.calls if self.calls else 0.0
        print(
            f"    {self.calls} calls, {per_call:.1f} messages a call, {self.rate_limited} x 429;"
            f" longest stretch with nothing accepted {self.longest_gap:.2f} s"
        )
        if self.first_to_last:
            print(
                f"    first enqueue to last acceptance {self.first_to_last:.2f} s:"
                f" {len(ms) / self.first_to_last:,.0f} msg/s"
            )
        print(
            f"    Redis: {self.commands:.1f} commands and {self.redis_cpu_us:.0f} µs of server CPU"
            " a message"
        )


# ``--commands``: also print which commands the server ran, per message.
SHOW_COMMANDS = False


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls of each command so far (commands run by scripts included)."""
    return {name: int(entry["calls"]) for name, entry in client.info("commandstats").items()}


def show_commands(before: dict[str, int], after: dict[str, int], messages: int) -> None:
    if not SHOW_COMMANDS:
        return
    spent = {name: after[name] - before.get(name, 0) for name in after}
    top = sorted(spent.items(), key=lambda item: -item[1])[:14]
    shown = (f"{name.removeprefix('cmdstat_')} {n / messages:.2f}" for name, n in top)
    print("    " + ", ".join(shown))


def redis_work(client: redis.Redis) -> tuple[int, float]:
    """All commands the server has run, and its CPU seconds (user + system)."""
    stats = client.info("commandstats")
    commands = sum(int(entry["calls"]) for entry in stats.values())
    cpu = client.info("cpu")
    return commands, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def longest_gap(stamps: list[tuple[float, float]]) -> float:
    """The longest time in which a message waited and nothing at all was accepted.

    Between two acceptances in a row, a stretch counts from the later of the
    first one and the earliest send among the messages still to be accepted.
    """
    ordered = sorted(stamps, key=lambda stamp: stamp[1])
    gap = 0.0
    earliest_waiting = math.inf
    previous: float | None = None
    # Walk backwards: the earliest send among the messages accepted from here on.
    waiting_from = []
    for sent_at, _ in reversed(ordered):
        earliest_waiting = min(earliest_waiting, sent_at)
        waiting_from.append(earliest_waiting)
    waiting_from.reverse()
    for (_, accepted_at), first_sent in zip(ordered, waiting_from, strict=True):
        began = first_sent if previous is None else max(previous, first_sent)
        gap = max(gap, accepted_at - began)
        previous = accepted_at
    return gap


def run(
    env: Stack,
    settings: Settings,
    label: str,
    *,
    rate: float,
    count: int,
    producers: int,
    timeout: float,
) -> Result:
    tag = f"{label}-{time.monotonic_ns()}"
    spawn = multiprocessing.get_context("spawn")
    go, start_at, done = spawn.Event(), spawn.Queue(), spawn.Queue()
    shares = [count // producers + (1 if i < count % producers else 0) for i in range(producers)]
    processes = [
        spawn.Process(
            target=produce,
            args=(settings, tag, rate / producers, share, go, start_at, done),
            daemon=True,
        )
        for share in shares
    ]
    for process in processes:
        process.start()
    # Each producer's warm-up send, then a quiet queue.
    _wait_for(lambda: env.mailtrap.stats.messages >= producers, 60)
    time.sleep(1.0)
    watcher = Watcher(env, tag)
    env.mailtrap.reset()
    commands_before, cpu_before = redis_work(env.client)
    counts_before = command_counts(env.client)
    watcher.start()
    start = time.monotonic() + 0.2
    for _ in processes:
        start_at.put(start)
    go.set()
    for _ in processes:
        done.get(timeout=timeout)
    _wait_for(lambda: len(watcher.stamps) >= count, timeout)
    watcher.stop()
    commands_after, cpu_after = redis_work(env.client)
    show_commands(counts_before, command_counts(env.client), max(1, len(watcher.stamps)))
    for process in processes:
        process.join(timeout=10)
    stats = env.mailtrap.stats
    stamps = watcher.stamps
    last = max((at for _, at in stamps), default=start)
    messages = max(1, len(stamps))
    return Result(
        label=label,
        latencies=[at - sent for sent, at in stamps],
        calls=stats.requests,
        messages=stats.messages,
        rate_limited=stats.rate_limited,
        longest_gap=longest_gap(stamps),
        first_to_last=last - start if rate == 0 else 0.0,
        commands=(commands_after - commands_before) / messages,
        redis_cpu_us=(cpu_after - cpu_before) * 1e6 / messages,
        expected=count,
    )


def idle_baseline(env: Stack, settings: Settings, sends: int = 10) -> Result:
    """One message at a time on an idle queue, each waited for before the next."""
    mailqueue.configure(settings)
    tag = f"idle-{time.monotonic_ns()}"
    watcher = Watcher(env, tag)
    env.mailtrap.reset()
    commands_before, cpu_before = redis_work(env.client)
    watcher.start()
    for index in range(sends):
        mailqueue.send_email.delay(message(tag, time.monotonic()))
        _wait_for(lambda index=index: len(watcher.stamps) > index, 30)
        time.sleep(0.2)
    watcher.stop()
    commands_after, cpu_after = redis_work(env.client)
    stats = env.mailtrap.stats
    return Result(
        label="idle queue, one message at a time (baseline)",
        latencies=[at - sent for sent, at in watcher.stamps],
        calls=stats.requests,
        messages=stats.messages,
        rate_limited=stats.rate_limited,
        longest_gap=0.0,
        first_to_last=0.0,
        commands=(commands_after - commands_before) / max(1, sends),
        redis_cpu_us=(cpu_after - cpu_before) * 1e6 / max(1, sends),
        expected=sends,
    )


def round_trip_floor(client: redis.Redis, rate: float, seconds: float = 3.0) -> float:
    """The server's CPU (µs) for one bare PING at ``rate`` a second, the worker idle beside it.

    One message costs at least one round trip (the producer's enqueue), and on a
    virtual machine a round trip at a low rate costs the server mostly the
    wake-up and the system calls around it: this is that floor, in the same run.
    """
    count = max(1, int(rate * seconds))
    _, cpu_before = redis_work(client)
    start = time.monotonic()
    for index in range(count):
        wait = start + index / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        client.ping()
    _, cpu_after = redis_work(client)
    return (cpu_after - cpu_before) * 1e6 / count


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s a rate, a 2,000-send burst")
    parser.add_argument("--rates", default="300,1000", help="messages a second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each rate runs")
    parser.add_argument("--burst", type=int, default=6000, help="lone sends in the burst")
    parser.add_argument("--commands", action="store_true", help="print Redis commands a message")
    options = parser.parse_args()
    global SHOW_COMMANDS
    SHOW_COMMANDS = options.commands
    seconds = 10.0 if options.quick else options.seconds
    burst = 2000 if options.quick else options.burst
    rates = [float(rate) for rate in options.rates.split(",") if rate.strip()]

    print(f"machine: {machine()}; LocalMailtrap {RATE[0]}/{RATE[1]:g}s per token,")
    print(f"{LATENCY * 1000:.0f} ms latency; one worker: `celery -A mailqueue worker -c 2`,")
    print("default settings; producers in processes of their own")
    with stack(rate_limit=RATE, latency=LATENCY) as env:
        settings = env.settings(rate_limit="150/10s", bulk_api_url=env.mailtrap.bulk_url)
        with WorkerProcess(settings, concurrency=2):
            time.sleep(1.0)
            idle_baseline(env, settings).show()
            for rate in rates:
                producers = max(1, math.ceil(rate / PER_PRODUCER))
                count = int(rate * seconds)
                result = run(
                    env,
                    settings,
                    f"steady {rate:,.0f} msg/s for {seconds:g} s ({producers} producer process"
                    + ("es)" if producers > 1 else ")"),
                    rate=rate,
                    count=count,
                    producers=producers,
                    timeout=seconds + 120,
                )
                result.show()
                floor = round_trip_floor(env.client, rate)
                print(
                    f"    a bare PING at {rate:,.0f} a second costs the server {floor:.0f} µs:"
                    f" a message costs {result.redis_cpu_us / floor:.1f} of them"
                )
                time.sleep(RATE[1])  # the next rate starts with a fresh window
            run(
                env,
                settings,
                f"burst: {burst:,} lone sends as fast as 4 producer processes enqueue them",
                rate=0,
                count=burst,
                producers=4,
                timeout=180,
            ).show()


if __name__ == "__main__":
    main()
