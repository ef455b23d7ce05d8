"""Shared parts of the benchmarks: a private stack, waiting for sends, CPU and percentiles."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

import mailqueue
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.testing import LocalMailtrap, RedisServer

FINAL = (b"sent", b"partially_sent", b"failed")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    """A private Redis and a LocalMailtrap, with settings pointing at both."""

    redis_url: str
    mailtrap: LocalMailtrap
    client: redis.Redis

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "api_token": self.mailtrap.token,
            "api_url": self.mailtrap.url,
            "bulk_api_url": self.mailtrap.bulk_url,
            "broker_url": self.redis_url,
            "connect_timeout": 5.0,
            "read_timeout": 10.0,
            "retry_backoff": 0.5,
            "retry_backoff_max": 2.0,
            "reclaim_idle": 30.0,
            "visibility_timeout": 60.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        mailqueue.configure(settings)
        return settings


@contextlib.contextmanager
def stack(**mailtrap_options: Any) -> Iterator[Stack]:
    """Start a private redis-server and a LocalMailtrap for one benchmark."""
    with RedisServer() as server, LocalMailtrap(**mailtrap_options) as mailtrap:
        client = redis.Redis.from_url(server.url)
        try:
            yield Stack(server.url, mailtrap, client)
        finally:
            client.close()


def wait_final(
    client: redis.Redis, send_ids: Sequence[str], timeout: float, poll: float = 0.05
) -> tuple[float, dict[str, str]]:
    """Poll (pipelined) until every send is final; returns (time it ended, id -> state).

    Sends still not final at ``timeout`` are returned with their last state.
    """
    pending = list(send_ids)
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        with client.pipeline(transaction=False) as pipe:
            for send_id in pending:
                pipe.hget(Keys().send(send_id), "state")
            answers = pipe.execute()
        still = []
        for send_id, state in zip(pending, answers, strict=True):
            states[send_id] = state.decode() if state else "missing"
            if state not in FINAL:
                still.append(send_id)
        pending = still
        if not pending or time.monotonic() > deadline:
            return time.monotonic(), states
        time.sleep(poll)


def process_tree_cpu(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(int(entry))
    total = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is not None:
            # utime, stime (fields 14, 15 of /proc/<pid>/stat; index 11, 12 after the name)
            total += (int(stat[11]) + int(stat[12])) / _TICKS
        todo.extend(children.get(pid, []))
    return total


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name may hold spaces; everything after its closing paren is fields.
    return text[text.rindex(")") + 2 :].split()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"


def latency_row(label: str, values: Sequence[float], width: int = 38) -> str:
    """One line of p50, p99 and mean, in milliseconds, for latencies given in seconds."""
    ms = [v * 1000 for v in values]
    return (
        f"{label:<{width}} p50 {statistics.median(ms):7.2f} ms   p99 {percentile(ms, 0.99):7.2f} ms"
        f"   mean {statistics.fmean(ms):7.2f} ms"
    )
