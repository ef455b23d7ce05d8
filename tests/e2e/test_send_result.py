"""``send_email.delay(...).get()`` waits for the send's final status record, from a real worker."""

from __future__ import annotations

import pytest
from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

pytestmark = pytest.mark.e2e

MESSAGE = {
    "from_email": "Shop <shop@example.com>",
    "to": ["alice@example.com"],
    "subject": "Your order",
    "text": "It ships today.",
}


def test_get_waits_for_the_final_record_of_the_send(
    worker: WorkerProcess, mailtrap: LocalMailtrap
) -> None:
    result = mailqueue.send_email.delay(MESSAGE)

    record = result.get(timeout=30)

    assert record["id"] == result.id
    assert record["state"] == "sent"
    (accepted,) = mailtrap.accepted
    assert record["recipients"]["alice@example.com"]["message_id"] == accepted.message_ids[0]
    assert result.ready() and result.successful()
    assert result.state == states.SUCCESS
    assert result.result == mailqueue.get_status(result.id)


def test_get_answers_a_failed_send_with_its_record_not_an_exception(
    worker: WorkerProcess,
) -> None:
    result = mailqueue.send_email.delay({**MESSAGE, "to": ["nobody@example.invalid"]})

    record = result.get(timeout=30)

    assert record["state"] == "failed"
    assert record["error"] is not None and record["error"]["kind"] == "permanent"
    assert result.failed() and result.state == states.FAILURE


def test_get_gives_up_after_its_timeout_pointing_at_get_status(settings: Settings) -> None:
    # No worker: the send stays queued.
    result = mailqueue.send_email.delay(MESSAGE)

    with pytest.raises(CeleryTimeoutError, match="get_status") as info:
        result.get(timeout=0.3, interval=0.05)

    assert "still queued" in str(info.value)
    assert result.state == states.PENDING and not result.ready() and result.result is None


def test_a_result_built_from_a_send_id_reads_the_same_record(
    worker: WorkerProcess,
) -> None:
    send_id = mailqueue.enqueue(MESSAGE)

    record = mailqueue.send_email.AsyncResult(send_id).get(timeout=30)

    assert record["id"] == send_id and record["state"] == "sent"
