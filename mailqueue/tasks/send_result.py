"""What ``send_email.delay(...)`` returns: a Celery ``AsyncResult`` read from mailqueue's status.

Celery keeps no results here (``task_ignore_result``): a send's outcome is its
status record, which a drain writes, not the task. So ``get`` waits for the
record to reach a final state instead of asking a result backend, and
answers with the record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from mailqueue.errors import MailqueueError
from mailqueue.records import FINAL_STATES

if TYPE_CHECKING:
    from mailqueue.client import Client
    from mailqueue.records import StatusRecord

__all__ = ["SendResult"]

# A send's state as Celery names a task's: code written for Celery results reads them.
CELERY_STATES = {
    "queued": states.PENDING,
    "retrying": states.RETRY,
    "sending": states.STARTED,
    "sent": states.SUCCESS,
    "partially_sent": states.SUCCESS,
    "failed": states.FAILURE,
    "cancelled": states.REVOKED,
    "expired": states.REVOKED,
}


class SendResult(AsyncResult):  # type: ignore[type-arg]
    """The result of ``send_email.delay``: ``.id`` is the send id; ``get`` waits for its outcome."""

    def __init__(self, id: str, *, client: Client | None = None, **options: Any) -> None:
        super().__init__(id, **options)
        self._client = client

    def record(self) -> StatusRecord | None:
        """The send's status record now (``mailqueue.get_status``)."""
        from mailqueue.client import default

        return (self._client or default()).get_status(self.id)

    def get(  # type: ignore[override]
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5, **_: Any
    ) -> StatusRecord:
        """Wait for the send's final status record and return it, a failed send's too.

        A failed send is an outcome, not an error of the task: its record's
        ``error`` says why, whatever ``propagate`` asks. Raises Celery's
        ``TimeoutError`` when ``timeout`` seconds pass first, and
        ``MailqueueError`` for an id with no record (unknown, or expired).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.record()
            if record is None:
                raise MailqueueError(f"no send {self.id!r} (unknown, or its record expired)")
            if record["state"] in FINAL_STATES:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise CeleryTimeoutError(
                    f"send {self.id} is still {record['state']} after {timeout:g} s;"
                    f" mailqueue.get_status({self.id!r}) tells where it is"
                )
            pause = max(interval, 0.05)
            if deadline is not None:
                pause = min(pause, max(deadline - time.monotonic(), 0.0))
            time.sleep(pause)

    wait = get  # type: ignore[assignment]

    def ready(self) -> bool:
        record = self.record()
        return record is not None and record["state"] in FINAL_STATES

    def successful(self) -> bool:
        record = self.record()
        return record is not None and record["state"] == "sent"

    def failed(self) -> bool:
        record = self.record()
        return record is not None and record["state"] == "failed"

    @property
    def state(self) -> str:  # type: ignore[override]  # REVOKED too
        """The send's state as Celery names a task's (``record()["state"]`` is mailqueue's)."""
        record = self.record()
        return states.PENDING if record is None else CELERY_STATES[record["state"]]

    status = state  # type: ignore[assignment]

    @property
    def result(self) -> StatusRecord | None:
        """The final status record, or None while the send is under way."""
        record = self.record()
        return record if record is not None and record["state"] in FINAL_STATES else None

    info = result  # type: ignore[assignment]

    def forget(self) -> None:
        """Nothing to forget: the status record expires with ``MAILQUEUE_STATUS_TTL``."""
