"""A bulk enqueue's group: its id comes back with the send ids, and its progress is one read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mailqueue
from mailqueue.client import Client
from mailqueue.client import default as current
from mailqueue.settings import Settings
from mailqueue.store.groups import get_batch_progress, get_group
from mailqueue.store.waker import fleet_activity

MESSAGE = {"from_email": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    mailqueue.configure(Settings(broker_url=redis_url, api_token="tok"))
    yield current()


def test_enqueue_many_is_a_list_of_ids_that_names_its_group(client: Client) -> None:
    ids = mailqueue.enqueue_many([MESSAGE, MESSAGE, MESSAGE])

    assert isinstance(ids, list)
    assert len(ids) == 3
    assert ids.group_id is not None
    records = [mailqueue.get_status(i) for i in ids]
    assert all(record is not None and record["group"] == ids.group_id for record in records)


def test_group_progress_counts_every_send_until_all_are_final(client: Client) -> None:
    ids = mailqueue.enqueue_many([MESSAGE, MESSAGE])

    progress = get_group(ids.group_id or "", status=client.store)

    assert progress is not None
    assert dict(progress.counts) == {"queued": 2}
    assert (progress.total, progress.finished, progress.done) == (2, 0, False)


def test_unknown_or_unsafe_group_ids_have_no_progress(client: Client) -> None:
    assert get_group("0123456789abcdef", status=client.store) is None
    assert get_group("../../etc", status=client.store) is None


def test_an_empty_enqueue_many_has_no_group(client: Client) -> None:
    ids = mailqueue.enqueue_many([])

    assert ids == []
    assert ids.group_id is None


def test_batch_progress_has_the_sends_state_and_no_recipients_before_an_answer(
    client: Client,
) -> None:
    send_id = mailqueue.enqueue(
        {
            **MESSAGE,
            "to": ["x@example.com", "y@example.com"],
            "merge_data": {"x@example.com": {}, "y@example.com": {}},
        }
    )

    progress = get_batch_progress(send_id, status=client.store)

    assert progress is not None
    assert (progress.state, dict(progress.recipients), progress.done) == ("queued", {}, False)
    assert get_batch_progress("0123456789abcdef", status=client.store) is None


def test_fleet_activity_counts_the_backlog_with_no_drain_running(client: Client) -> None:
    mailqueue.enqueue_many([MESSAGE, MESSAGE, MESSAGE])

    activity = fleet_activity(waker=client.waker, outbox=client.outbox)

    assert (activity.live_drains, activity.waiting) == (0, 3)
    assert activity.last_heartbeat is None
    assert activity.idle_for() is None


def test_fleet_activity_follows_a_drains_heartbeat_from_arrival_to_leaving(
    client: Client,
) -> None:
    client.waker.arrive("worker-1")
    running = fleet_activity(waker=client.waker, outbox=client.outbox)
    client.waker.leave("worker-1")

    assert (running.live_drains, running.idle_for()) == (1, 0.0)
    assert running.last_heartbeat is not None
    assert fleet_activity(waker=client.waker, outbox=client.outbox).live_drains == 0
