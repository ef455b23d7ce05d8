"""Crash scenarios: after each, every message ends ``sent`` or ``failed`` with a reason.

    .venv/bin/python tests/crash.py kill          # workers SIGKILLed and replaced, repeatedly
    .venv/bin/python tests/crash.py kill-held     # ... each while an accepted call's answer is held
    .venv/bin/python tests/crash.py redis         # Redis (append-only) killed and restarted mid-run
    .venv/bin/python tests/crash.py api-down      # the API refuses connections for a minute
    .venv/bin/python tests/crash.py broker-down   # producers facing a down Redis
    .venv/bin/python tests/crash.py failover      # Sentinel: the Redis master SIGKILLed mid-run
    .venv/bin/python tests/crash.py failover-answered  # ... while answers are being recorded
    .venv/bin/python tests/crash.py all
    .venv/bin/python tests/crash.py --no-reconcile kill   # without Email Logs look-ups

Each prints its figures and exits non-zero on a lost message, a wrong status, an
unflagged duplicate, a producer that hung, or a status record left for a
message whose enqueue raised.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import mailqueue
from mailqueue.settings import Settings
from mailqueue.store.connection import connect
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import RedisServer, online_replicas
from mailqueue.testing.sentinel import SentinelGroup
from mailqueue.testing.worker import WorkerProcess

try:
    from tests.soak import SoakReport, analyse, enqueue_all, soak_messages, wait_settled
except ImportError:  # run as a script: tests/ itself is on sys.path
    from soak import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        SoakReport,
        analyse,
        enqueue_all,
        soak_messages,
        wait_settled,
    )


@dataclass
class CrashReport:
    """The outcome of one scenario: the soak checks plus producer-side figures."""

    name: str
    delivery: SoakReport
    events: list[str] = field(default_factory=list)
    refused: int = 0  # enqueues that raised BrokerUnavailable
    slowest_refusal: float = 0.0  # seconds the slowest of them took
    refusal_bound: float = 5.0
    orphans: int = 0  # status records beyond the sends whose enqueue returned
    stray_refusals: int = 0  # refusals outside the window where one is expected

    @property
    def ok(self) -> bool:
        return (
            self.delivery.ok
            and self.delivery.not_final == 0
            and self.orphans == 0
            and self.slowest_refusal < self.refusal_bound
            and self.stray_refusals == 0
        )

    def lines(self) -> list[str]:
        return [
            f"== {self.name}",
            *(f"event               {event}" for event in self.events),
            *self.delivery.lines()[:-1],
            f"producer refusals   {self.refused} (slowest {self.slowest_refusal:.2f} s, "
            f"bound {self.refusal_bound:g} s)",
            f"orphan records      {self.orphans}",
            f"stray refusals      {self.stray_refusals}",
            f"verdict             {'OK' if self.ok else 'FAILED'}",
        ]


# Whether workers look lost answers up in Email Logs (``--no-reconcile`` turns it off).
RECONCILE = True


def crash_settings(mailtrap: LocalMailtrap, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_token": mailtrap.token,
        "api_url": mailtrap.url,
        "bulk_api_url": mailtrap.bulk_url,
        "general_api_url": mailtrap.general_url,
        "reconcile": RECONCILE,
        "reconcile_settle": 2.0,
        "email_logs_rate_limit": "6000/60s",
        "broker_url": redis_url,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "retry_backoff": 0.5,
        "retry_backoff_max": 4.0,
        "max_retries": 40,
        "reclaim_idle": 5.0,
        "visibility_timeout": 20.0,
        "rate_limit": "200/1s",
        "coalesce": False,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def environment(
    *,
    appendonly: bool = False,
    latency: float = 0.02,
    fault_rates: dict[str, float] | None = None,
    **overrides: Any,
) -> Iterator[tuple[RedisServer, LocalMailtrap, Settings]]:
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer(appendonly=appendonly))
        mailtrap = stack.enter_context(
            LocalMailtrap(latency=latency, fault_rates=fault_rates, logs_delay=1.0)
        )
        settings = crash_settings(mailtrap, server.url, **overrides)
        mailqueue.configure(settings)
        yield server, mailtrap, settings


def _count_records(url: str) -> int:
    client = connect(url)
    try:
        return sum(1 for _ in client.scan_iter("{mq}:send:*", count=1000))
    finally:
        client.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.02)


def _wait_accepted(mailtrap: LocalMailtrap, count: int, timeout: float = 60.0) -> None:
    wait_for(
        lambda: len(mailtrap.accepted) >= count, f"{count} messages accepted by the API", timeout
    )


def _count_in_state(send_ids: Sequence[str], state: str) -> int:
    """How many of ``send_ids`` are in ``state`` right now."""
    records = (mailqueue.get_status(send_id) for send_id in send_ids)
    return sum(1 for record in records if record is not None and record["state"] == state)


# -- scenarios ------------------------------------------------------------


def scenario_kill(messages: int = 2000, kills: int = 5) -> CrashReport:
    """Two workers; one is SIGKILLed and a fresh one started at evenly spaced points of the run.

    Each kill waits for the run to reach its point (a share of the messages accepted by
    the API), so every kill lands mid-run however fast or slow the machine is.
    """
    with environment() as (_, mailtrap, settings):
        texts = soak_messages(messages, run="kill")
        report = CrashReport("workers killed with SIGKILL", SoakReport(messages=messages))
        workers = [WorkerProcess(settings).start(), WorkerProcess(settings).start()]
        try:
            started = time.monotonic()
            ids = enqueue_all(texts)
            for round_ in range(kills):
                _wait_accepted(mailtrap, (round_ + 1) * messages // (kills + 1))
                _kill_one(workers, settings, mailtrap, report, f"kill {round_ + 1}", started)
            wait_settled(ids, timeout=180)
            report.delivery.seconds = time.monotonic() - started
        finally:
            for worker in workers:
                worker.stop()
        analyse(mailtrap, texts, ids, report.delivery)
        return report


def _kill_one(
    workers: list[WorkerProcess],
    settings: Settings,
    mailtrap: LocalMailtrap,
    report: CrashReport,
    label: str,
    started: float,
) -> None:
    """SIGKILL the oldest worker, note how far delivery was, and start a new one."""
    victim = workers.pop(0)
    seen = len(mailtrap.accepted)
    victim.kill()
    victim.stop()
    report.events.append(
        f"{label}: at {time.monotonic() - started:.1f} s, {seen} messages accepted so far"
    )
    workers.append(WorkerProcess(settings).start())


def scenario_kill_held(messages: int = 1000, kills: int = 3) -> CrashReport:
    """Coalesced calls whose answers are held 1.5 s; each kill lands while one is on its way."""
    with environment(fault_rates={"slow": 1.0}, coalesce=True) as (_, mailtrap, settings):
        mailtrap.slow_seconds = 1.5  # under the read timeout: held, not lost
        texts = soak_messages(messages, run="held")
        report = CrashReport(
            "workers killed while Mailtrap's answer to an accepted call is held",
            SoakReport(messages=messages),
        )
        workers = [WorkerProcess(settings).start(), WorkerProcess(settings).start()]
        try:
            started = time.monotonic()
            ids = enqueue_all(texts)
            for round_ in range(kills):
                before = len(mailtrap.accepted)
                _wait_accepted(mailtrap, before + 1, timeout=30)
                _kill_one(workers, settings, mailtrap, report, f"kill {round_ + 1}", started)
            wait_settled(ids, timeout=240)
            report.delivery.seconds = time.monotonic() - started
        finally:
            for worker in workers:
                worker.stop()
        analyse(mailtrap, texts, ids, report.delivery)
        return report


def scenario_redis_restart(
    messages: int = 600, refusals: int = 3, crash: bool = True
) -> CrashReport:
    """Producers keep sending while Redis (append-only, fsync always) is killed and restarted.

    Every step waits for a state, not for time: Redis is cut off once a quarter of
    ``messages`` have been accepted by the API, stays down until producers have been
    refused ``refusals`` times, and producers go on until they have enqueued again
    after the restart and ``messages`` in all.

    Redis is killed between two enqueues, never during one: an enqueue cut off
    mid-call is ambiguous (its transaction may be on disk while its answer was
    lost), so it may raise BrokerUnavailable and still leave a send that is
    delivered. Its caller cannot tell; retrying with an idempotency key is the
    remedy. Every refusal counted here is therefore one that wrote nothing.
    """
    with environment(appendonly=True) as (server, mailtrap, settings):
        report = CrashReport("Redis killed and restarted", SoakReport(messages=0))
        sent_texts: list[dict[str, Any]] = []
        ids: list[str] = []
        durations: list[float] = []
        after_restart: list[str] = []
        restarted = threading.Event()
        stop = threading.Event()
        calling = threading.Lock()  # held by the producer during each enqueue

        def produce() -> None:
            for batch in itertools.count():
                for message in soak_messages(100, run=f"redis {batch}"):
                    if stop.is_set():
                        return
                    with calling:
                        began = time.monotonic()
                        try:
                            send_id = mailqueue.send_email.delay(message).id
                        except mailqueue.BrokerUnavailable:
                            durations.append(time.monotonic() - began)
                        else:
                            ids.append(send_id)
                            sent_texts.append(message)
                            if restarted.is_set():
                                after_restart.append(send_id)
                    time.sleep(0.005)  # pacing: leave the workers some of the two cores

        with WorkerProcess(settings), WorkerProcess(settings):
            started = time.monotonic()
            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            try:
                _wait_accepted(mailtrap, messages // 4)
                with calling:
                    server.halt(crash=crash)
                report.events.append(
                    f"Redis {'killed' if crash else 'stopped'} at "
                    f"{time.monotonic() - started:.1f} s after {len(mailtrap.accepted)} accepted"
                )
                wait_for(lambda: len(durations) >= refusals, f"{refusals} enqueues refused")
                server.start()
                restarted.set()
                report.events.append(
                    f"Redis back at {time.monotonic() - started:.1f} s after "
                    f"{len(durations)} enqueues refused"
                )
                wait_for(
                    lambda: len(after_restart) >= 10 and len(ids) >= messages,
                    f"10 enqueues after the restart and {messages} in all",
                )
            finally:
                stop.set()
                producer.join()
            wait_settled(ids, timeout=180)
            report.delivery.seconds = time.monotonic() - started
        report.delivery.messages = len(ids)
        analyse(mailtrap, sent_texts, ids, report.delivery)
        report.refused = len(durations)
        report.slowest_refusal = max(durations, default=0.0)
        report.orphans = _count_records(server.url) - len(ids)
        return report


def scenario_api_down(
    messages: int = 600, down_until: str = "retrying", until_count: int = 5, **overrides: Any
) -> CrashReport:
    """The API refuses every connection mid-run, then comes back.

    It goes down once an eighth of the messages have been accepted and stays down
    until ``until_count`` sends are in state ``down_until`` ("retrying": the outage
    was felt and retries are pending; "failed": some exhausted their retries).
    """
    with environment(latency=0.01, **overrides) as (_, mailtrap, settings):
        report = CrashReport(
            f"API unreachable until {until_count} sends {down_until}",
            SoakReport(messages=messages),
        )
        texts = soak_messages(messages, run="api")
        with WorkerProcess(settings), WorkerProcess(settings):
            started = time.monotonic()
            ids = enqueue_all(texts[: messages // 2])
            _wait_accepted(mailtrap, messages // 8)
            mailtrap.stop()
            report.events.append(
                f"API down at {time.monotonic() - started:.1f} s after "
                f"{len(mailtrap.accepted)} accepted"
            )
            ids += enqueue_all(texts[messages // 2 :])
            wait_for(
                lambda: _count_in_state(ids, down_until) >= until_count,
                f"{until_count} sends {down_until}",
                timeout=120,
            )
            mailtrap.start()
            report.events.append(f"API back at {time.monotonic() - started:.1f} s")
            wait_settled(ids, timeout=180)
            report.delivery.seconds = time.monotonic() - started
        analyse(mailtrap, texts, ids, report.delivery)
        return report


def scenario_broker_down(attempts: int = 5) -> CrashReport:
    """Producers facing a stopped (refusing) or frozen Redis raise BrokerUnavailable at once."""
    with environment(appendonly=True) as (server, _, _settings):
        report = CrashReport("producers facing a down broker", SoakReport(messages=0))
        message = soak_messages(1, run="down")[0]
        calls: list[Callable[[], object]] = [
            lambda: mailqueue.enqueue(message),
            lambda: mailqueue.send_email.delay(message),
            lambda: mailqueue.enqueue_many([message, message]),
            lambda: mailqueue.enqueue(message, idempotency_key="order-1"),
        ]
        durations: list[float] = []

        def try_all(rounds: int) -> int:
            refused = 0
            for _ in range(rounds):
                for call in calls:
                    began = time.monotonic()
                    try:
                        call()
                    except mailqueue.BrokerUnavailable:
                        durations.append(time.monotonic() - began)
                        refused += 1
                    else:
                        report.orphans += 1  # an enqueue that claimed success with Redis down
            return refused

        server.halt(crash=True)
        refused = try_all(attempts)
        report.events.append(f"Redis killed: {refused} enqueues refused")
        server.start()
        # A frozen server accepts connections but never answers: only timeouts help.
        assert server.process is not None
        mailqueue.configure(_settings)  # fresh connections, as a new producer process has
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            refused = try_all(1)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        report.events.append(f"Redis frozen (SIGSTOP): {refused} enqueues refused")
        report.orphans += _count_records(server.url)
        report.refused = len(durations)
        report.slowest_refusal = max(durations, default=0.0)
        return report


@dataclass
class _Producers:
    """Threads enqueueing one message at a time, as web requests would, until stopped."""

    texts: list[dict[str, Any]]
    pace: float
    ids: list[str] = field(default_factory=list)
    sent_texts: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[tuple[float, float]] = field(default_factory=list)  # (began, ended)
    successes_at: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, count: int) -> list[threading.Thread]:
        numbers = itertools.count()
        threads = [threading.Thread(target=self._produce, args=(numbers,)) for _ in range(count)]
        for thread in threads:
            thread.start()
        return threads

    def _produce(self, numbers: Iterator[int]) -> None:
        while not self.stop.is_set():
            number = next(numbers)
            if number >= len(self.texts):
                return
            message = self.texts[number]
            began = time.monotonic()
            try:
                send_id = mailqueue.send_email.delay(message).id
            except mailqueue.BrokerUnavailable:
                with self.lock:
                    self.refusals.append((began, time.monotonic()))
            else:
                with self.lock:
                    self.ids.append(send_id)
                    self.sent_texts.append(message)
                    self.successes_at.append(time.monotonic())
            time.sleep(self.pace)

    def successes_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for at in self.successes_at if at > moment)


def scenario_failover(
    *,
    producers: int = 2,
    pace: float = 0.02,
    warmup: int = 200,
    after: int = 400,
    rejoin: bool = True,
    grace: float = 5.0,
    settle: float = 600.0,
) -> CrashReport:
    """Sentinel, one replica: the master is SIGKILLed while producers enqueue and a worker sends.

    Every send whose enqueue returned an id must end ``sent``; a producer may
    be refused (BrokerUnavailable) only between the kill and ``grace``
    seconds after the sentinels agree on the promoted replica. With
    ``rejoin`` the killed master is restarted and must come back as a
    replica of the new master, so that later enqueues are replicated again.
    """
    with ExitStack() as stack:
        group = stack.enter_context(SentinelGroup(replicas=1, down_after_ms=1000))
        mailtrap = stack.enter_context(LocalMailtrap(latency=0.02))
        settings = crash_settings(mailtrap, group.url)
        mailqueue.configure(settings)
        report = CrashReport(
            "Redis master killed; Sentinel promotes its replica", SoakReport(messages=0)
        )
        texts = soak_messages(100_000, run="failover")
        load = _Producers(texts, pace)
        worker = stack.enter_context(WorkerProcess(settings))
        started = time.monotonic()
        threads = load.run(producers)
        try:
            _wait_accepted(mailtrap, warmup, timeout=120)
            killed = time.monotonic()
            old = group.kill_master()
            report.events.append(
                f"master :{old.port} SIGKILLed at {killed - started:.1f} s, "
                f"{len(load.ids)} enqueued and {len(mailtrap.accepted)} accepted so far"
            )
            new = group.wait_for_failover(old.port)
            promoted = time.monotonic()
            report.events.append(
                f"replica :{new.port} promoted {promoted - killed:.1f} s after the kill"
            )
            if rejoin:
                old.start()
                try:
                    wait_for(lambda: online_replicas(new.port) == 1, "the old master to rejoin")
                    back = True
                except TimeoutError:
                    back = False
                report.events.append(
                    f"old master restarted: back as a replica {time.monotonic() - promoted:.1f} s "
                    f"after the promotion"
                    if back
                    else "old master restarted: did NOT rejoin"
                )
            wait_for(
                lambda: load.successes_since(promoted) >= after,
                f"{after} enqueues after the promotion",
                timeout=180,
            )
        finally:
            load.stop.set()
            for thread in threads:
                thread.join()
        enqueued_at_end = time.monotonic()
        wait_settled(load.ids, timeout=settle)
        report.delivery.seconds = time.monotonic() - started
        # Stopped before the count, so that no send changes state while it runs.
        worker.stop()
        report.delivery.messages = len(load.ids)
        analyse(mailtrap, load.sent_texts, load.ids, report.delivery)
        report.refused = len(load.refusals)
        report.slowest_refusal = max((end - began for began, end in load.refusals), default=0.0)
        report.stray_refusals = sum(
            1 for began, end in load.refusals if end < killed or began > promoted + grace
        )
        if load.refusals:
            first = min(began for began, _ in load.refusals) - killed
            last = max(end for _, end in load.refusals) - killed
            report.events.append(
                f"refusals from {first:+.1f} s to {last:+.1f} s after the kill "
                f"(window: until {promoted - killed + grace:.1f} s)"
            )
        report.events.append(
            f"enqueued {len(load.ids)} in {enqueued_at_end - started:.1f} s by {producers} "
            f"producers, {load.successes_since(promoted)} after the promotion"
        )
        # A refused enqueue whose write reached a replica before the master died is
        # delivered anyway: the producer could not know. Counted, not a failure.
        extra = _count_records(group.url) - len(load.ids)
        report.events.append(f"refused, yet queued {extra} (delivered; their reply was lost)")
        return report


def scenario_failover_answered(
    *,
    messages: int = 1000,
    kill_after: int = 300,
    settle: float = 300.0,
    reconcile: bool | None = None,
) -> CrashReport:
    """Sentinel, one replica: the master is SIGKILLed while a worker records Mailtrap's answers.

    Every message is queued (and replicated) first; the worker sends them
    one call each, with up to 16 calls in flight, so that answers are being
    recorded at any moment; once ``kill_after`` are accepted the master dies.
    Each record of an accepted call waited for the replica, and one the dead
    master could not take is written again once the replica is promoted, so
    that nothing is lost and nothing sent twice, without Email Logs look-ups
    too (``reconcile=False``, as for the sandbox).
    """
    with ExitStack() as stack:
        group = stack.enter_context(SentinelGroup(replicas=1, down_after_ms=1000))
        mailtrap = stack.enter_context(LocalMailtrap(latency=0.02, logs_delay=1.0))
        # Leases long enough to outlast the failover (about 3 s here): a worker
        # keeps trying to record an answer while its lease holds the part.
        settings = crash_settings(
            mailtrap,
            group.url,
            reclaim_idle=15.0,
            visibility_timeout=30.0,
            reconcile=RECONCILE if reconcile is None else reconcile,
        )
        mailqueue.configure(settings)
        report = CrashReport(
            "Redis master killed while Mailtrap's answers are recorded",
            SoakReport(messages=messages, max_retries=settings.max_retries),
        )
        texts = soak_messages(messages, run="answered")
        ids = enqueue_all(texts)
        started = time.monotonic()
        worker = stack.enter_context(WorkerProcess(settings))
        _wait_accepted(mailtrap, kill_after, timeout=120)
        accepted_at_kill = len(mailtrap.accepted)
        old = group.kill_master()
        killed = time.monotonic()
        report.events.append(
            f"master :{old.port} SIGKILLed at {killed - started:.1f} s, "
            f"{accepted_at_kill} accepted so far"
        )
        new = group.wait_for_failover(old.port)
        report.events.append(
            f"replica :{new.port} promoted {time.monotonic() - killed:.1f} s after the kill"
        )
        wait_settled(ids, timeout=settle)
        report.delivery.seconds = time.monotonic() - started
        worker.stop()
        analyse(mailtrap, texts, ids, report.delivery)
        return report


SCENARIOS: dict[str, Callable[[], CrashReport]] = {
    "kill": scenario_kill,
    "kill-held": scenario_kill_held,
    "redis": scenario_redis_restart,
    "api-down": scenario_api_down,
    "broker-down": scenario_broker_down,
    "failover": scenario_failover,
    "failover-answered": scenario_failover_answered,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument(
        "--no-reconcile", action="store_true", help="send again without looking in Email Logs"
    )
    args = parser.parse_args(argv)
    global RECONCILE
    RECONCILE = not args.no_reconcile
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    failed = False
    for name in names:
        report = SCENARIOS[name]()
        print("\n".join(report.lines()), flush=True)
        for problem in (
            report.delivery.lost + report.delivery.wrong + report.delivery.unflagged_duplicates
        )[:20]:
            print(f"  problem: {problem}")
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
