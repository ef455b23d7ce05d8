"""Retries end, with a real worker: every request failing ends each send failed within budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mailqueue
from mailqueue.client import default
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e

SENDS = 20
MAX_RETRIES = 2


def message(i: int) -> dict[str, Any]:
    return {
        "from_email": "shop@example.com",
        "to": [f"r{i}@example.com"],
        "subject": f"m{i}",
        "text": "x",
    }


# A 500 and a reset leave the outcome unknown (each try is looked up in Email
# Logs first); a 503 says the request was not handled (retried in process first).
@pytest.mark.parametrize("fault", ["500", "reset", "503"])
def test_every_request_failing_ends_every_send_failed_and_dead_lettered_within_its_tries(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, fault: str
) -> None:
    settings = make_settings(
        max_retries=MAX_RETRIES,
        retry_backoff=1.0,
        retry_backoff_max=3600.0,
    )
    mailtrap.fault_rates = {fault: 1.0}
    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        ids = [mailqueue.enqueue(message(i)) for i in range(SENDS)]
        records = wait_final(ids, timeout=120)

    assert {r["state"] for r in records.values()} == {"failed"}
    assert all(r["attempts"] <= MAX_RETRIES + 1 for r in records.values())
    assert all(r["error"] and r["error"]["kind"] == "transient" for r in records.values())
    assert {sid for sid, _ in default().outbox.dead_letters()} == set(ids)
    assert not mailtrap.accepted
    tried = mailtrap.stats.by_recipient
    # In-process retries make up to three requests of a try that surely was not
    # handled (a 503); a try whose answer is unknown is never repeated blindly.
    per_try = 3 if fault == "503" else 1
    assert max(tried.values()) <= (MAX_RETRIES + 1) * per_try, tried
    assert set(tried) == {f"r{i}@example.com" for i in range(SENDS)}
