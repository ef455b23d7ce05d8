"""Lost answers with real workers: looked up in Email Logs, nothing twice, fallbacks counted."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e


def message(i: int) -> dict[str, Any]:
    return {
        "from_email": "shop@example.com",
        "to": [f"r{i}@example.com"],
        "subject": f"m{i}",
        "text": "x",
    }


def copies(mailtrap: LocalMailtrap) -> Counter[str]:
    return Counter(m.payload["subject"] for m in mailtrap.accepted)


def test_sigkill_while_an_accepted_coalesced_call_is_answered_sends_nothing_twice(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap
) -> None:
    settings = make_settings(reclaim_idle=3.0)
    mailtrap.slow_seconds = 1.5  # Mailtrap accepted the call; its answer is on its way
    mailtrap.inject("slow")
    first = WorkerProcess(settings, concurrency=2).start()
    try:
        ids = mailqueue.enqueue_many([message(i) for i in range(100)])
        deadline = time.monotonic() + 20
        while not mailtrap.accepted and time.monotonic() < deadline:
            time.sleep(0.005)
        first.kill()
        accepted_at_kill = len(mailtrap.accepted)
    finally:
        first.stop()
    assert accepted_at_kill > 1, "the kill must land while a coalesced call is answered"

    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        records = wait_final(ids, timeout=60)

    assert {r["state"] for r in records.values()} == {"sent"}
    assert copies(mailtrap) == {f"m{i}": 1 for i in range(100)}
    assert sum(r["reconciled"] for r in records.values()) >= accepted_at_kill
    assert sum(r["possible_duplicates"] for r in records.values()) == 0


def test_a_reset_after_accept_and_an_answer_past_the_timeout_send_nothing_twice(
    settings: Settings, mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    # And the other answers after which Mailtrap may have accepted the call:
    # a 500, and a 200 whose body is not Mailtrap's.
    faults = ("lost", "slow", "accepted-500", "accepted-nonjson")
    mailtrap.slow_seconds = settings.read_timeout + 1.0
    ids = []
    for i, fault in enumerate(faults):
        mailtrap.inject(fault)
        ids.append(mailqueue.enqueue(message(i)))
        wait_final(ids[-1:], timeout=30)
    records = wait_final(ids)
    assert mailtrap.stats.faults == dict.fromkeys(faults, 1)
    assert copies(mailtrap) == {f"m{i}": 1 for i in range(len(faults))}
    for record in records.values():
        assert record["state"] == "sent"
        assert record["reconciled"] == 1 and record["possible_duplicates"] == 0


@pytest.mark.parametrize(
    ("logs", "fallbacks"),
    [
        # Email Logs list nothing before the settle delay ends: sent again, counted.
        ({"delay": 3600}, 0),
        # Email Logs are down: the look-up falls back to sending again, counted as such too.
        ({"failure": 503}, 1),
    ],
)
def test_a_look_up_that_cannot_tell_gives_a_counted_resend(
    settings: Settings,
    mailtrap: LocalMailtrap,
    worker: WorkerProcess,
    logs: dict[str, Any],
    fallbacks: int,
) -> None:
    for name, value in logs.items():
        setattr(mailtrap.email_logs, name, value)
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))
    record = wait_final([send_id], timeout=30)[send_id]
    assert record["state"] == "sent"
    assert copies(mailtrap) == {"m1": 2}
    assert record["possible_duplicates"] == 1 and record["reconciled"] == 0
    assert record["reconcile_fallbacks"] == fallbacks
