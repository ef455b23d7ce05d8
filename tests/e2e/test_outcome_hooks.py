"""A worker tells ``MAILQUEUE_ON_OUTCOME`` each send's final outcome, once, with its record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import wait_final
from .outcome_receivers import LIST

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PLAIN = {"from_email": "shop@example.com", "subject": "Your order", "text": "secret body"}


def wait_for_entries(
    client: redis.Redis, count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while client.llen(LIST) < count:
        assert time.monotonic() < deadline, f"{client.llen(LIST)} of {count} outcomes told"
        time.sleep(0.05)
    return [json.loads(raw) for raw in client.lrange(LIST, 0, -1)]


def test_each_final_outcome_is_told_once_with_its_record_and_a_raising_hook_breaks_nothing(
    make_settings: Callable[..., Settings],
    mailtrap: LocalMailtrap,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    settings = make_settings(on_outcome="tests.e2e.outcome_receivers.record_outcome")
    recipients = [f"user{i}@example.com" for i in range(520)]
    env = {"OUTCOME_RECEIVER_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    with WorkerProcess(settings, concurrency=1, extra_env=env) as worker:
        sends = {
            "plain": mailqueue.enqueue({**PLAIN, "to": ["a@example.com", "b@example.com"]}),
            # Two batch calls: the second part to end makes the send final.
            "two parts": mailqueue.enqueue(
                {
                    "from_email": "news@example.com",
                    "to": recipients,
                    "template_id": "7f1b6a36-0000-4000-8000-000000000001",
                    "merge_data": {address: {"n": i} for i, address in enumerate(recipients)},
                }
            ),
            "refused": mailqueue.enqueue({**PLAIN, "to": ["someone@nowhere.invalid"]}),
            "hook raises": mailqueue.enqueue({**PLAIN, "to": ["boom@example.com"]}),
            # Refused by the worker's own validation: final there, with no call.
            "refused by task": mailqueue.app.send_task(
                "mailqueue.send_email", args=[{**PLAIN, "to": ["nope"]}]
            ).id,
        }
        records = wait_final(sends.values())
        entries = wait_for_entries(redis_client, len(sends))
        # Everything told was told before a warm shutdown ends: nothing comes twice after.
        worker.stop()
        log = worker.output()

    told = [json.loads(raw) for raw in redis_client.lrange(LIST, 0, -1)]
    assert sorted(entry["id"] for entry in told) == sorted(sends.values())
    by_id = {entry["id"]: entry["record"] for entry in entries}
    for name, send_id in sends.items():
        assert by_id[send_id]["state"] == records[send_id]["state"], name
        assert by_id[send_id]["recipients"] == records[send_id]["recipients"], name
    assert by_id[sends["two parts"]]["parts"] == 2
    assert len(by_id[sends["two parts"]]["recipients"]) == 520
    assert by_id[sends["refused"]]["state"] == "failed"
    assert by_id[sends["refused by task"]]["error"]["kind"] == "validation"
    assert records[sends["hook raises"]]["state"] == "sent"
    assert "the on_outcome hook raised RuntimeError" in log
    assert settings.api_token is not None
    assert "secret body" not in log and settings.api_token not in log


def test_a_send_taken_over_from_a_killed_worker_is_told_once(
    make_settings: Callable[..., Settings],
    mailtrap: LocalMailtrap,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    settings = make_settings(
        on_outcome="tests.e2e.outcome_receivers.record_outcome", reclaim_idle=4.0
    )
    env = {"OUTCOME_RECEIVER_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    # Mailtrap accepts the call, but its answer comes too late for the first worker.
    mailtrap.inject("slow")
    first = WorkerProcess(settings, concurrency=1, extra_env=env).start()
    try:
        send_id = mailqueue.enqueue({**PLAIN, "to": ["a@example.com"]})
        deadline = time.monotonic() + 20
        while not mailtrap.accepted:
            assert time.monotonic() < deadline, "the call never reached the stand-in"
            time.sleep(0.02)
        first.kill()
    finally:
        first.stop()

    with WorkerProcess(settings, concurrency=1, extra_env=env) as second:
        record = wait_final([send_id], timeout=60)[send_id]
        wait_for_entries(redis_client, 1)
        second.stop()

    told = [json.loads(raw) for raw in redis_client.lrange(LIST, 0, -1)]
    assert [entry["id"] for entry in told] == [send_id]
    assert record["state"] == "sent" and record["reconciled"] == 1
    assert len(mailtrap.accepted) == 1
