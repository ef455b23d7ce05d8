"""Waiting for sends to settle."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import mailqueue

FINAL = {"sent", "partially_sent", "failed", "cancelled", "expired"}


def wait_final(send_ids: Iterable[str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Poll until every send is in a final state; returns the records."""
    pending = list(send_ids)
    records: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for send_id in pending:
            record = mailqueue.get_status(send_id)
            if record is not None and record["state"] in FINAL:
                records[send_id] = record
            else:
                still.append(send_id)
        pending = still
        if pending:
            time.sleep(0.05)
    if pending:
        states = {sid: (mailqueue.get_status(sid) or {}).get("state") for sid in pending[:5]}
        raise AssertionError(f"{len(pending)} sends not final after {timeout} s: {states}")
    return records
