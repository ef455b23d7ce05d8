"""A worker killed with SIGKILL mid-run loses nothing; what it may have doubled is counted."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import mailqueue
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e


def test_sigkill_mid_run_every_message_still_sent(make_settings, mailtrap: LocalMailtrap) -> None:
    mailtrap.latency = 0.2
    settings = make_settings(
        coalesce=False, rate_limit="20/1s", reclaim_idle=6.0, calls_in_flight=3
    )
    messages = [
        {
            "from_email": "a@example.com",
            "to": [f"r{i}@example.com"],
            "subject": f"m{i}",
            "text": "x",
        }
        for i in range(60)
    ]
    first = WorkerProcess(settings, concurrency=2).start()
    try:
        ids = mailqueue.enqueue_many(messages)
        deadline = time.monotonic() + 20
        while len(mailtrap.accepted) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.kill()
        seen_at_kill = len(mailtrap.accepted)
    finally:
        first.stop()
    assert 0 < seen_at_kill < 60, "the kill must land mid-run"

    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        records = wait_final(ids, timeout=90)

    assert {r["state"] for r in records.values()} == {"sent"}
    by_subject = Counter(m.payload["subject"] for m in mailtrap.accepted)
    assert set(by_subject) == {f"m{i}" for i in range(60)}
    doubled = {subject for subject, count in by_subject.items() if count > 1}
    # Only calls in flight at the kill (two pool processes, three calls each, one send per
    # call) can be doubled, and each one that was is flagged in its status.
    assert len(doubled) <= 2 * 3
    flagged = {
        records[send_id]["recipients"] and messages[i]["subject"]
        for i, send_id in enumerate(ids)
        if records[send_id]["possible_duplicates"] > 0
    }
    assert doubled <= flagged
