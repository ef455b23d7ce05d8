"""Latency of a lone message on an idle queue: coalescing on against off.

Coalescing must not make a lone message wait for company. Each round sends
one message, waits until its record is ``sent``, then pauses so that the
drain exits and the queue is idle again. The baseline, measured in the same
run, is one ``requests`` POST of the same payload straight to the local
Mailtrap: the part of the latency that no queue can remove.

    .venv/bin/python tests/benchmarks/bench_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import latency_row, machine, stack

import mailqueue
from mailqueue.store.keys import Keys
from mailqueue.testing.worker import WorkerProcess

MESSAGE = {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}


def lone_latencies(client, rounds: int, idle: float) -> list[float]:  # type: ignore[no-untyped-def]
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        send_id = mailqueue.enqueue(MESSAGE)
        while client.hget(Keys().send(send_id), "state") != b"sent":
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - started)
        time.sleep(idle)
    return latencies


def direct_latencies(url: str, token: str, rounds: int) -> list[float]:
    [call] = mailqueue.build_payload(MESSAGE)
    body = json.dumps(call.json)
    session = requests.Session()
    headers = {"Api-Token": token, "Content-Type": "application/json"}
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        session.post(url + call.path, data=body, headers=headers, timeout=5).raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 20 if args.quick else 100
    # Longer than a drain's empty-queue exit, so every round meets an idle queue.
    idle = 0.05
    print(f"lone-message latency, {rounds} rounds each; {machine()}")
    with stack() as env:
        results = {}
        for coalesce in (True, False):
            settings = env.settings(coalesce=coalesce)
            with WorkerProcess(settings, concurrency=2):
                lone_latencies(env.client, 5, idle)  # warm up the pool's HTTP sessions
                results[coalesce] = lone_latencies(env.client, rounds, idle)
        direct = direct_latencies(env.mailtrap.url, env.mailtrap.token, rounds)
    print(latency_row("enqueue -> sent, coalescing on", results[True]))
    print(latency_row("enqueue -> sent, coalescing off", results[False]))
    print(latency_row("baseline: one POST to the local Mailtrap", direct))
    added = statistics.median(results[True]) - statistics.median(results[False])
    print(f"added by coalescing (p50 on - p50 off): {added * 1000:+.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
