"""Single sends waiting together ride one batch call, and each keeps its own fate."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import mailqueue
from mailqueue.client import default
from mailqueue.mailtrap.transport import ATTEMPTS
from mailqueue.settings import Settings
from mailqueue.store.waker import fleet_activity
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.polling import wait_for
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e


def order(index: int, to: str | None = None) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [to or f"customer{index}@example.com"],
        "subject": f"Order {index}",
        "text": "It ships today.",
    }


def enqueue_then_start_worker(
    settings: Settings, messages: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Queue every message while no worker runs, so that they wait together; then deliver."""
    ids = [mailqueue.enqueue(message) for message in messages]
    with WorkerProcess(settings, concurrency=2, loglevel="INFO") as worker:
        try:
            records = wait_final(ids)
        except AssertionError:
            print(worker.output())
            raise
    return {send_id: dict(records[send_id]) for send_id in ids}


def subjects_accepted(mailtrap: LocalMailtrap) -> Counter[str]:
    return Counter(message.payload["subject"] for message in mailtrap.accepted)


def test_waiting_sends_go_in_one_batch_call_with_their_own_statuses_and_ids(
    mailtrap: LocalMailtrap, settings: Settings
) -> None:
    records = enqueue_then_start_worker(settings, [order(i) for i in range(20)])

    assert mailtrap.stats.by_path == {"/api/batch": 1}
    by_subject = {m.payload["subject"]: m for m in mailtrap.accepted}
    for index, record in enumerate(records.values()):
        assert record["state"] == "sent"
        recipient = record["recipients"][f"customer{index}@example.com"]
        assert recipient["status"] == "queued"
        assert (recipient["message_id"],) == by_subject[f"Order {index}"].message_ids


def test_a_refused_request_fails_only_its_own_send(
    mailtrap: LocalMailtrap, settings: Settings
) -> None:
    messages = [order(i) for i in range(5)]
    messages[2] = order(2, to="someone@nowhere.invalid")

    records = list(enqueue_then_start_worker(settings, messages).values())

    assert mailtrap.stats.by_path == {"/api/batch": 1}
    assert [r["state"] for r in records] == ["sent", "sent", "failed", "sent", "sent"]
    assert records[2]["error"]["kind"] == "permanent"
    assert records[2]["recipients"]["someone@nowhere.invalid"]["status"] == "failed"
    assert all(r["error"] is None for i, r in enumerate(records) if i != 2)


@pytest.mark.parametrize("fault", ["500", "reset"])
def test_a_whole_call_transient_failure_retries_every_send_once_each(
    fault: str, mailtrap: LocalMailtrap, settings: Settings
) -> None:
    # Enough faults to use up the in-process retries: the call goes back to the
    # outbox and is retried later as a whole.
    mailtrap.inject(fault, times=ATTEMPTS)

    records = enqueue_then_start_worker(settings, [order(i) for i in range(10)])

    assert all(r["state"] == "sent" for r in records.values())
    assert all(r["attempts"] >= 2 for r in records.values())
    assert mailtrap.stats.faults[fault] == ATTEMPTS
    assert subjects_accepted(mailtrap) == Counter(f"Order {i}" for i in range(10))


def test_sends_already_accepted_are_not_sent_again_when_their_envelopes_return(
    mailtrap: LocalMailtrap, settings: Settings, redis_client: Any
) -> None:
    first = enqueue_then_start_worker(settings, [order(i) for i in range(3)])
    # The same envelopes delivered again (as after a worker lost its acknowledgement).
    from mailqueue.client import default as current
    from mailqueue.core.envelope import envelopes_for
    from mailqueue.core.payload import prepare

    runtime = current()
    replay = [
        envelope
        for i, send_id in enumerate(first)
        for envelope in envelopes_for(prepare(order(i), settings), send_id=send_id)
    ]
    with redis_client.pipeline() as pipe:
        for envelope in replay:
            runtime.outbox.add(pipe, envelope)
        pipe.execute()
    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        deadline = time.monotonic() + 15
        while redis_client.xlen("{mq}:outbox") and time.monotonic() < deadline:
            time.sleep(0.05)

    assert redis_client.xlen("{mq}:outbox") == 0
    assert subjects_accepted(mailtrap) == Counter(f"Order {i}" for i in range(3))
    assert all(mailqueue.get_status(s)["state"] == "sent" for s in first)  # type: ignore[index]


def wait_idle(timeout: float = 30.0) -> None:
    """Until no drain is running (their heartbeats say so)."""
    deadline = time.monotonic() + timeout
    while fleet_activity(waker=default().waker, outbox=default().outbox).live_drains:
        assert time.monotonic() < deadline, "a drain never ended"
        time.sleep(0.05)


def test_a_lone_message_on_an_idle_queue_is_sent_at_once_by_the_send_path(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    wait_idle()  # the start-up drain has finished: the queue is idle
    started = time.monotonic()
    send_id = mailqueue.enqueue(order(1))
    record = wait_final([send_id])[send_id]
    elapsed = time.monotonic() - started

    assert record["state"] == "sent"
    assert mailtrap.stats.by_path == {"/api/send": 1}
    print(f"\nlone message: enqueue to sent in {elapsed * 1000:.0f} ms (polled every 50 ms)")


def test_without_coalescing_each_message_is_its_own_call(
    mailtrap: LocalMailtrap, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(coalesce=False)

    records = enqueue_then_start_worker(settings, [order(i) for i in range(10)])

    assert all(r["state"] == "sent" for r in records.values())
    assert mailtrap.stats.by_path == {"/api/send": 10}


def test_a_coalesced_call_stays_within_the_hourly_cap_and_the_rest_shows_when_it_may_go(
    mailtrap: LocalMailtrap, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(hourly_cap=50)
    ids = [mailqueue.enqueue(order(i)) for i in range(80)]

    def states() -> Counter[str]:
        return Counter(str(default().store.state(i)) for i in ids)

    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        wait_for(lambda: len(mailtrap.accepted) >= 50, 30, "the cap's worth reached Mailtrap")
        wait_for(lambda: states() == {"sent": 50, "queued": 30}, 10, "50 sent, 30 held")
        time.sleep(2.0)  # a window in which nothing more may arrive
        assert len(mailtrap.accepted) == 50
        held: list[Mapping[str, Any]] = [mailqueue.get_status(i) or {} for i in ids]
        held = [record for record in held if record["state"] == "queued"]
        assert len(held) == 30
        assert all(record.get("next_attempt_at") for record in held)
