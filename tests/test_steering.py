"""Steering scheduled sends through a Client on a real Redis: what moves, what ends, what stays."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mailqueue.client import Client
from mailqueue.deliver.drain import Drainer
from mailqueue.produce.steering import list_scheduled
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import MemoryTransport


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    client = Client(
        Settings(
            broker_url=redis_url,
            api_token="t",
            rate_limit=RateLimit.parse("100000/1s"),
            coalesce=False,
        ),
        publish=lambda *args, **kwargs: None,
    )
    yield client
    client.close()


def drain(client: Client) -> MemoryTransport:
    transport = MemoryTransport()
    Drainer(client.drain_parts, transport=transport).drain(budget=5)
    return transport


def message(index: int, **extra: object) -> dict[str, object]:
    return {
        "from_email": "news@example.com",
        "to": [f"reader{index}@example.com"],
        "subject": "News",
        "text": "Hello",
        **extra,
    }


def test_cancelling_a_campaign_leaves_a_send_that_only_mentions_it_at_its_time(
    client: Client,
) -> None:
    later = time.time() + 3600
    [member] = client.enqueue_many([message(0, send_at=later)], campaign="spring")
    # Not in the campaign; its metadata becomes custom_variables {"campaign": "spring"}.
    bystander = client.enqueue(message(1, send_at=later, metadata={"campaign": "spring"}))

    client.cancel_campaign("spring")
    drain(client)

    assert client.get_status(member)["state"] == "cancelled"  # type: ignore[index]
    assert client.get_status(bystander)["state"] == "queued"  # type: ignore[index]
    assert [row["id"] for row in list_scheduled(status=client.store)] == [bystander]


def test_cancelling_a_scheduled_batch_send_ends_every_part_now(client: Client) -> None:
    recipients = [f"r{i}@example.com" for i in range(501)]
    send_id = client.enqueue(
        {
            **message(0, send_at=time.time() + 3600),
            "to": recipients,
            "merge_data": {address: {} for address in recipients},
        }
    )

    record = client.cancel(send_id)

    assert record["state"] == "cancelled"
    assert {r["status"] for r in record["recipients"].values()} == {"cancelled"}
    assert len(record["recipients"]) == 501
    assert client.outbox.waiting_parts(send_id) == []
    assert list_scheduled(status=client.store) == []


def test_rescheduling_moves_every_part_of_the_send_and_no_other(client: Client) -> None:
    recipients = [f"r{i}@example.com" for i in range(501)]
    soon = time.time() + 60
    send_id = client.enqueue(
        {
            **message(0, send_at=soon),
            "to": recipients,
            "merge_data": {address: {} for address in recipients},
        }
    )
    other = client.enqueue(message(1, send_at=soon, metadata={"id": send_id}))
    much_later = soon + 86_400

    client.reschedule(send_id, much_later)

    retry = client.keys.retry
    assert client.redis.zscore(retry, f"{send_id}|0") == pytest.approx(much_later)
    assert client.redis.zscore(retry, f"{send_id}|1") == pytest.approx(much_later)
    assert client.redis.zscore(retry, f"{other}|0") == pytest.approx(soon)
    assert [row["id"] for row in list_scheduled(status=client.store)] == [other, send_id]
