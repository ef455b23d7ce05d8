"""Waiting for sends to settle, and workers ended at the end of a test."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mailqueue
from mailqueue.client import default
from mailqueue.testing.worker import WorkerProcess

FINAL = {"sent", "partially_sent", "failed", "cancelled", "expired"}


def wait_final(send_ids: Iterable[str], timeout: float = 30.0) -> dict[str, Mapping[str, Any]]:
    """Poll until every send is in a final state; returns the records."""
    pending = list(send_ids)
    records: dict[str, Mapping[str, Any]] = {}
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
        states = {sid: default().store.state(sid) for sid in pending[:5]}
        raise AssertionError(f"{len(pending)} sends not final after {timeout} s: {states}")
    return records


@contextmanager
def killed_at_exit(worker: WorkerProcess) -> Iterator[WorkerProcess]:
    """``with killed_at_exit(WorkerProcess(...)):`` runs it, then SIGKILLs it at the block's end.

    For the last worker of a test: a warm shutdown waits a second or more for the
    pool to wind down, and nothing after the block needs it (a killed worker sends
    nothing more either). A worker followed by another keeps its warm shutdown: a
    killed drain's heartbeat would make producers wait for a sweep.
    """
    with worker:
        yield worker
        worker.kill()
