"""A message handed to send_email.delay reaches Mailtrap once, or ends failed with the reason."""

from __future__ import annotations

import pytest

import mailqueue
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e

PLAIN = {
    "from_email": "Shop <shop@example.com>",
    "to": ["alice@example.com"],
    "cc": ["Bob <bob@example.com>"],
    "subject": "Your order",
    "text": "It ships today.",
}


def test_single_send_is_sent_with_message_ids(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    result = mailqueue.send_email.delay(PLAIN)

    record = wait_final([result.id])[result.id]

    assert record["state"] == "sent"
    assert set(record["recipients"]) == {"alice@example.com", "bob@example.com"}
    accepted = {m.message_ids[0]: m for m in mailtrap.accepted}
    for recipient in record["recipients"].values():
        assert recipient["status"] == "queued"
        assert recipient["message_id"] in {mid for m in mailtrap.accepted for mid in m.message_ids}
    assert len(accepted) == 1
    assert mailtrap.accepted[0].payload["subject"] == "Your order"


def test_status_is_queued_before_any_worker_runs(settings: mailqueue.Settings) -> None:
    send_id = mailqueue.enqueue(PLAIN)

    record = mailqueue.get_status(send_id)

    assert record is not None
    assert record["state"] == "queued"
    assert record["attempts"] == 0


def test_invalid_message_raises_before_anything_is_enqueued(
    settings: mailqueue.Settings, redis_client
) -> None:
    with pytest.raises(mailqueue.ValidationError) as info:
        mailqueue.send_email.delay({**PLAIN, "to": ["not an address"]})

    assert "to[0]" in str(info.value)
    assert redis_client.keys("{mq}:send:*") == []


def test_template_batch_over_500_recipients_takes_two_batch_calls(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    recipients = [f"user{i}@example.com" for i in range(620)]
    message = {
        "from_email": "news@example.com",
        "to": recipients,
        "template_id": "7f1b6a36-0000-4000-8000-000000000001",
        "merge_global_data": {"company": "Example"},
        "merge_data": {address: {"n": i} for i, address in enumerate(recipients)},
    }

    send_id = mailqueue.enqueue(message)
    record = wait_final([send_id])[send_id]

    assert record["state"] == "sent"
    assert mailtrap.stats.by_path["/api/batch"] == 2
    assert len(record["recipients"]) == 620
    ids = {r["message_id"] for r in record["recipients"].values()}
    assert None not in ids and len(ids) == 620
    assert len(mailtrap.accepted) == 620


def test_idempotency_key_reused_enqueues_once(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    first = mailqueue.enqueue(PLAIN, idempotency_key="order-1234-confirmation")
    second = mailqueue.enqueue(PLAIN, idempotency_key="order-1234-confirmation")

    wait_final([first])

    assert second == first
    assert len(mailtrap.accepted) == 1


def test_permanent_failure_ends_failed_with_error_and_dead_letter(
    mailtrap: LocalMailtrap, worker: WorkerProcess, redis_client
) -> None:
    send_id = mailqueue.enqueue({**PLAIN, "to": ["someone@nowhere.invalid"], "cc": []})

    record = wait_final([send_id])[send_id]

    assert record["state"] == "failed"
    assert record["error"]["kind"] == "permanent"
    assert record["error"]["status_code"] == 400
    assert record["recipients"]["someone@nowhere.invalid"]["status"] == "failed"
    assert redis_client.zscore("{mq}:dead", send_id) is not None


def test_transient_faults_are_absorbed_by_retries(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    mailtrap.inject("500")
    mailtrap.inject("503")
    mailtrap.inject("reset")

    send_id = mailqueue.enqueue(PLAIN)
    record = wait_final([send_id])[send_id]

    assert record["state"] == "sent"
    assert record["attempts"] >= 1
    assert len(mailtrap.accepted) == 1


def test_sandbox_send_goes_to_the_inbox_path(make_settings, mailtrap: LocalMailtrap) -> None:
    settings = make_settings(sandbox_id="12345")
    with killed_at_exit(WorkerProcess(settings)):
        send_id = mailqueue.enqueue(PLAIN)
        record = wait_final([send_id])[send_id]

    assert record["state"] == "sent"
    assert mailtrap.accepted[0].path == "send/12345"
    ids = {r["message_id"] for r in record["recipients"].values()}
    assert len(ids) == 1


def test_a_message_sent_by_task_name_is_delivered_under_the_task_id(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    # A producer without mailqueue installed only knows the task's name.
    result = mailqueue.app.send_task("mailqueue.send_email", args=[PLAIN])

    record = wait_final([result.id])[result.id]

    assert record["state"] == "sent"
    assert len(mailtrap.accepted) == 1


def test_an_invalid_message_sent_by_task_name_ends_failed_with_the_reason(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    result = mailqueue.app.send_task("mailqueue.send_email", args=[{**PLAIN, "to": ["nope"]}])

    record = wait_final([result.id])[result.id]

    assert record["state"] == "failed"
    assert record["error"]["kind"] == "validation"
    assert "to[0]" in record["error"]["message"]
    assert mailtrap.accepted == []
