"""Worker CPU per delivered message: mailqueue against django-celery-email + django-anymail.

Run: ``python tests/benchmarks/bench_worker_cpu.py [--quick] [--no-baseline] [--merge] [--render]``.

The CPU time (user + system, from /proc) of a worker's main process and its
pool children is sampled before the messages are queued and after the last
one is delivered, and divided by the number of messages. Both workers run
``--concurrency 2`` against a private Redis and a LocalMailtrap with no rate
limit and no added latency, so that CPU, not waiting, is what differs.

Baseline: django-celery-email 3.0 (``CeleryEmailBackend``, one message per
task) whose task sends through django-anymail's Mailtrap backend to the same
LocalMailtrap: each message is one Celery task and one HTTP request. The
producer side is not measured here (see bench_producer.py).

The worker renders each call's body from the queued message with its own
settings: every figure here includes that rendering. ``--merge`` adds a
merge-data send of ``count`` recipients (500-recipient parts, each rendered
into one ``batch`` call by the worker), so the per-recipient cost of
rendering batch parts shows too. ``--no-baseline`` skips the baseline
(it needs django-celery-email installed).

``--render`` measures, in this process and with no worker, the CPU a worker
spends on one envelope between reading it and posting it: decoding it and
rendering its call, for an envelope carrying the message (what producers
queue now) against one carrying the body a producer rendered (the earlier
format, which needs no rendering). Best of five rounds, so that other load
on the machine counts as little as it can.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import Stack, machine, process_tree_cpu, stack, wait_final

import mailqueue
from mailqueue.testing.worker import WorkerProcess

HERE = Path(__file__).resolve().parent
TARGET_MS = 0.5


def message(index: int) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [f"customer{index}@example.com"],
        "subject": f"Order {index} confirmed",
        "text": "Thank you for your order.",
        "html": "<p>Thank you for your order.</p>",
    }


def report(label: str, count: int, cpu: float, seconds: float) -> float:
    per = 1000 * cpu / count
    print(
        f"{label:<46} {count:>6,} msgs  worker CPU {cpu:6.2f} s  "
        f"{per:7.3f} ms/msg  ({seconds:5.1f} s wall)"
    )
    return per


def mailqueue_worker(env: Stack, count: int, *, coalesce: bool) -> float:
    settings = env.settings(rate_limit="100000/1s", coalesce=coalesce)
    env.client.flushdb()
    with WorkerProcess(settings, concurrency=2) as worker:
        assert worker.process is not None
        time.sleep(1.0)  # let start-up work settle
        env.mailtrap.reset()
        before = process_tree_cpu(worker.process.pid)
        started = time.monotonic()
        ids = [mailqueue.send_email.delay(message(i)).id for i in range(count)]
        ended, states = wait_final(env.client, ids, timeout=300)
        after = process_tree_cpu(worker.process.pid)
    assert all(state == "sent" for state in states.values()), "not every message was sent"
    label = "mailqueue, " + ("coalesced" if coalesce else "one request per message")
    return report(label, count, after - before, ended - started)


def merge_worker(env: Stack, count: int) -> float:
    """One merge-data send to ``count`` recipients: CPU per recipient delivered."""
    settings = env.settings(rate_limit="100000/1s", coalesce=True)
    env.client.flushdb()
    to = [f"customer{i}@example.com" for i in range(count)]
    batch = {
        "from_email": "Shop <shop@example.com>",
        "to": to,
        "subject": "Your order {{order}}",
        "text": "Thank you for order {{order}}.",
        "merge_data": {address: {"order": str(i)} for i, address in enumerate(to)},
    }
    with WorkerProcess(settings, concurrency=2) as worker:
        assert worker.process is not None
        time.sleep(1.0)
        env.mailtrap.reset()
        before = process_tree_cpu(worker.process.pid)
        started = time.monotonic()
        ids = [mailqueue.send_email.delay(batch).id]
        ended, states = wait_final(env.client, ids, timeout=300)
        after = process_tree_cpu(worker.process.pid)
    assert all(state == "sent" for state in states.values()), "not every message was sent"
    return report("mailqueue, merge-data parts of 500", count, after - before, ended - started)


def render_cost(count: int) -> None:
    """CPU per envelope of decoding and rendering, message-carrying against body-carrying."""
    from mailqueue.core.envelope import Envelope, envelopes_for
    from mailqueue.core.payload import ApiCall, prepare
    from mailqueue.core.routing import resolve_route
    from mailqueue.settings import Settings

    settings = Settings(api_token="t", default_from_email="Shop <shop@example.com>")
    route = resolve_route(settings)
    lone = [message(i) for i in range(count)]
    merge = {
        "from_email": "Shop <shop@example.com>",
        "to": [f"customer{i}@example.com" for i in range(500)],
        "subject": "Your order {{order}}",
        "text": "Thank you for order {{order}}.",
        "merge_data": {f"customer{i}@example.com": {"order": str(i)} for i in range(500)},
    }
    cases = {"single send": lone, "merge-data part of 500": [merge] * max(count // 500, 4)}
    for label, messages in cases.items():
        rendered = [
            envelope
            for i, item in enumerate(messages)
            for envelope in envelopes_for(prepare(item, settings), send_id=f"s{i}")
        ]
        bodies = [
            Envelope(send_id=e.send_id, part=e.part, body=ApiCall(e.kind, c.json, c.recipients))
            for e in rendered
            for c in [e.render(settings)]
        ]
        per_message = sum(len(e.flat_recipients) for e in rendered) / len(rendered)
        for kind, envelopes in (("message (render)", rendered), ("body (earlier)", bodies)):
            raws = [e.encode() for e in envelopes]
            best = min(_decode_and_render(raws, settings, route) for _ in range(5))
            per = 1e6 * best / len(raws)
            size = sum(len(raw) for raw in raws) / len(raws)
            print(
                f"{label + ', ' + kind:<46} {len(raws):>6,} envelopes  {per:8.1f} µs/envelope"
                f"  {per / per_message:6.2f} µs/msg  {size:8,.0f} bytes/envelope"
            )


def _decode_and_render(raws: list[str], settings: Any, route: Any) -> float:
    from mailqueue.core.envelope import Envelope

    started = time.process_time()
    for raw in raws:
        envelope = Envelope.decode(raw)
        envelope.render(settings)
        envelope.call_for(route)
        _ = envelope.body_bytes
    return time.process_time() - started


def djcelery_worker(env: Stack, count: int) -> float:
    env.client.flushdb()
    os.environ.update(
        BENCH_BROKER_URL=env.redis_url,
        BENCH_MAILTRAP_URL=env.mailtrap.url,
        BENCH_MAILTRAP_TOKEN=env.mailtrap.token,
    )
    sys.path.insert(0, str(HERE))
    import djcelery_worker  # configures Django the same way in this process

    djcelery_worker.app.set_current()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "djcelery_worker", "worker",
             "--concurrency", "2", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=HERE, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            measured = _send_through_djcelery(env, process.pid, count)
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert len(env.mailtrap.accepted) == count, "not every message was sent"
    return report("baseline: django-celery-email + anymail", count, *measured)


def _send_through_djcelery(env: Stack, pid: int, count: int) -> tuple[float, float]:
    """Send ``count`` emails the Django way; (worker CPU, wall seconds) until all arrived."""
    from django.core.mail import EmailMultiAlternatives

    time.sleep(4.0)  # no ready signal to wait for; start-up takes 1-2 s
    env.mailtrap.reset()
    before = process_tree_cpu(pid)
    started = time.monotonic()
    for i in range(count):
        data = message(i)
        email = EmailMultiAlternatives(
            data["subject"], data["text"], data["from_email"], data["to"]
        )
        email.attach_alternative(data["html"], "text/html")
        email.send()
    deadline = time.monotonic() + 300
    while len(env.mailtrap.accepted) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = time.monotonic()
    return process_tree_cpu(pid) - before, ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip django-celery-email (not installed)"
    )
    parser.add_argument("--merge", action="store_true", help="also a merge-data batch send")
    parser.add_argument(
        "--render", action="store_true", help="only the in-process decode and render cost"
    )
    options = parser.parse_args()
    count = 1_000 if options.quick else 5_000
    if options.render:
        print(f"machine: {machine()}; in this process, no worker")
        render_cost(count)
        return

    print(f"machine: {machine()}; workers: `celery worker --concurrency 2`")
    with stack() as env:
        coalesced = mailqueue_worker(env, count, coalesce=True)
        mailqueue_worker(env, count, coalesce=False)
        if options.merge:
            merge_worker(env, count * 4)
        if options.no_baseline:
            met = "met" if coalesced < TARGET_MS else "NOT met"
            print(f"    target under {TARGET_MS} ms: {met}")
            return
        baseline = djcelery_worker(env, count)
    print(
        f"    mailqueue (coalesced) uses {baseline / coalesced:,.1f}x less worker CPU per message; "
        f"target under {TARGET_MS} ms: {'met' if coalesced < TARGET_MS else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
