"""A campaign file queued as one batch send in parts, streamed, on a real Redis.

Delivery runs the drain loop over an in-memory transport; the CLI's own
tests (``test_cli.py``) send the same files to the local Mailtrap.
"""

from __future__ import annotations

import queue
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mailqueue.client import Client
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import ValidationError
from mailqueue.produce import chunked_send
from mailqueue.produce.campaign_csv import Repeats
from mailqueue.produce.campaign_file import queue_campaign_file
from mailqueue.produce.chunked_send import PARTS_PER_TRANSACTION, enqueue_each
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.groups import get_group
from mailqueue.testing import MemoryTransport

TEMPLATE = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
FROM = "news@example.com"


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    wakeups: queue.Queue[dict[str, Any]] = queue.Queue()
    settings = Settings(
        broker_url=redis_url, api_token="t", rate_limit=RateLimit.parse("100000/1s")
    )
    client = Client(settings, publish=wakeups.put)
    yield client
    client.close()


def write_rows(path: Path, count: int, bad: dict[int, str] | None = None) -> str:
    lines = ["email,name"]
    for n in range(count):
        lines.append(f"{(bad or {}).get(n, f'user{n}@example.com')},Name {n}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def streams(redis_client: redis.Redis) -> dict[str, int]:
    return {
        key.decode(): int(redis_client.xlen(key))
        for key in redis_client.scan_iter("{mq}:outbox*")
        if redis_client.type(key) == b"stream"
    }


def test_a_file_is_one_send_of_one_part_per_500_rows(client: Client, tmp_path: Path) -> None:
    queued = queue_campaign_file(
        client.producer, write_rows(tmp_path / "list.csv", 1234), TEMPLATE, from_email=FROM,
        routing={"stream": "bulk"}, campaign="spring",
    )  # fmt: skip

    assert (queued.parts, queued.recipients, queued.resumed_from) == (3, 1234, 0)
    record = client.get_campaign("spring")
    assert record is not None
    assert (record["recipients"], record["counts"]) == (1234, {"waiting": 1234})
    status = client.get_status(queued.send_id)
    assert status is not None
    assert (status["state"], status["parts"], status["campaign"]) == ("queued", 3, "spring")


def test_every_row_reaches_mailtrap_once_with_its_merge_data(
    client: Client, tmp_path: Path
) -> None:
    queued = queue_campaign_file(
        client.producer, write_rows(tmp_path / "list.csv", 1100), TEMPLATE, from_email=FROM,
        campaign="spring",
    )  # fmt: skip
    transport = MemoryTransport()
    Drainer(client.drain_parts, transport=transport).drain(budget=10)

    merged = {}
    for call in transport.calls:
        for request in call.json["requests"]:
            merged[request["to"][0]["email"]] = request["template_variables"]["name"]
    assert merged == {f"user{n}@example.com": f"Name {n}" for n in range(1100)}
    assert sum(len(call.json["requests"]) for call in transport.calls) == 1100
    status = client.get_status(queued.send_id)
    assert status is not None and status["state"] == "sent"
    record = client.get_campaign("spring")
    assert record is not None
    assert (record["state"], record["counts"]) == ("finished", {"sent": 1100, "waiting": 0})


def test_a_bad_row_past_the_first_part_is_named_and_nothing_is_queued(
    client: Client, tmp_path: Path, redis_client: redis.Redis
) -> None:
    path = write_rows(tmp_path / "list.csv", 1200, bad={1100: "broken"})

    with pytest.raises(ValidationError) as caught:
        queue_campaign_file(client.producer, path, TEMPLATE, from_email=FROM, campaign="spring")

    # Row 1102 of the file: the header is row 1, recipient 0 is row 2.
    assert str(caught.value) == "row 1102: 'broken' is not an email address (no @domain)"
    assert caught.value.field == path
    assert redis_client.keys("{mq}:send:*") == []
    assert streams(redis_client) == {}
    assert client.get_campaign("spring") is None


def test_an_interrupted_enqueue_run_again_queues_only_the_rest(
    client: Client, tmp_path: Path, redis_client: redis.Redis
) -> None:
    rows = 500 * PARTS_PER_TRANSACTION * 2 + 7  # three transactions
    path = write_rows(tmp_path / "list.csv", rows)

    def stop_after_the_first_transaction(phase: str, count: int) -> None:
        if phase == "queued":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        queue_campaign_file(
            client.producer, path, TEMPLATE, from_email=FROM, campaign="spring",
            progress=stop_after_the_first_transaction,
        )  # fmt: skip
    halfway = client.get_campaign("spring")
    assert halfway is not None and halfway["recipients"] == 500 * PARTS_PER_TRANSACTION

    again = queue_campaign_file(client.producer, path, TEMPLATE, from_email=FROM, campaign="spring")
    once_more = queue_campaign_file(
        client.producer, path, TEMPLATE, from_email=FROM, campaign="spring"
    )

    assert again.resumed_from == PARTS_PER_TRANSACTION
    assert once_more.already_queued and once_more.send_id == again.send_id
    record = client.get_campaign("spring")
    assert record is not None and record["recipients"] == rows
    assert sum(streams(redis_client).values()) == again.parts == 2 * PARTS_PER_TRANSACTION + 1


def test_another_file_under_the_same_name_is_another_send(client: Client, tmp_path: Path) -> None:
    first = queue_campaign_file(
        client.producer,
        write_rows(tmp_path / "a.csv", 3),
        TEMPLATE,
        from_email=FROM,
        campaign="spring",
    )
    second = queue_campaign_file(
        client.producer,
        write_rows(tmp_path / "b.csv", 4),
        TEMPLATE,
        from_email=FROM,
        campaign="spring",
    )

    assert first.send_id != second.send_id
    record = client.get_campaign("spring")
    assert record is not None and record["recipients"] == 7


def test_a_repeated_address_is_queued_once_and_counted_in_the_campaign(
    client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "email,name\nann@example.com,Ann\nANN@example.com,Ann\nben@example.com,Ben\n"
        "ann@example.com,Ann\n"
    )
    repeats = Repeats()

    queued = queue_campaign_file(
        client.producer, str(path), TEMPLATE, from_email=FROM, campaign="spring", repeats=repeats
    )
    again = queue_campaign_file(
        client.producer, str(path), TEMPLATE, from_email=FROM, campaign="spring"
    )

    assert (queued.recipients, repeats.count, repeats.rows) == (2, 2, [3, 5])
    assert again.already_queued
    record = client.get_campaign("spring")
    assert record is not None
    assert (record["recipients"], record["duplicates"]) == (2, 2)  # counted once
    transport = MemoryTransport()
    Drainer(client.drain_parts, transport=transport).drain(budget=10)
    sent = [r["to"][0]["email"] for call in transport.calls for r in call.json["requests"]]
    assert sent == ["ann@example.com", "ben@example.com"]


def test_a_campaign_with_a_subject_and_text_sends_each_recipient_alone(
    client: Client, tmp_path: Path
) -> None:
    content = {"subject": "Spring", "text": "Hello"}
    queue_campaign_file(
        client.producer, write_rows(tmp_path / "list.csv", 3), content, from_email=FROM
    )
    transport = MemoryTransport()
    Drainer(client.drain_parts, transport=transport).drain(budget=10)

    (call,) = transport.calls
    assert call.json["base"] == {"from": {"email": FROM}, "subject": "Spring", "text": "Hello"}
    assert [r["to"] for r in call.json["requests"]] == [
        [{"email": f"user{n}@example.com"}] for n in range(3)
    ]


def test_repeated_rows_of_individual_sends_are_counted_in_the_campaign(client: Client) -> None:
    queued = enqueue_each(
        client.producer, (newsletter(n) for n in range(3)), campaign="spring", left_out=lambda: 4
    )

    record = client.get_campaign("spring")
    assert record is not None
    assert (queued.sends, record["recipients"], record["duplicates"]) == (3, 3, 4)


def newsletter(n: int) -> dict[str, Any]:
    return {"from_email": FROM, "to": [f"user{n}@example.com"], "template_id": TEMPLATE}


def test_each_message_is_a_send_of_one_group_queued_in_several_transactions(
    client: Client,
) -> None:
    queued = enqueue_each(client.producer, (newsletter(n) for n in range(1200)), campaign="spring")

    assert (queued.sends, queued.recipients) == (1200, 1200)
    group = get_group(queued.group_id, status=client.store)
    assert group is not None and dict(group.by_state) == {"queued": 1200}
    record = client.get_campaign("spring")
    assert record is not None and record["counts"] == {"waiting": 1200}
    transport = MemoryTransport()
    Drainer(client.drain_parts, transport=transport).drain(budget=10)
    sent = [r for call in transport.calls for group_ in call.recipients for r in group_]
    assert sorted(sent) == sorted(f"user{n}@example.com" for n in range(1200))


def test_a_bad_message_late_in_the_stream_queues_nothing(
    client: Client, redis_client: redis.Redis
) -> None:
    messages = [newsletter(n) for n in range(1200)]
    messages[1100]["to"] = ["broken"]

    with pytest.raises(ValidationError) as caught:
        enqueue_each(client.producer, iter(messages), campaign="spring")

    assert caught.value.index == 1100
    assert redis_client.keys("{mq}:send:*") == []
    assert streams(redis_client) == {}


def traced_peak(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_memory_of_a_campaign_file_does_not_grow_with_its_rows(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Transactions of two parts (1,000 rows), which both files fill: the
    # pipeline of one is the largest thing held.
    monkeypatch.setattr(chunked_send, "PARTS_PER_TRANSACTION", 2)
    small = write_rows(tmp_path / "small.csv", 2_000)
    large = write_rows(tmp_path / "large.csv", 6_000)

    peaks = [
        traced_peak(
            lambda path=path: queue_campaign_file(client.producer, path, TEMPLATE, from_email=FROM)
        )
        for path in (small, large)
    ]

    # Three times the rows, not three times the memory (held whole, it was).
    assert peaks[1] < 1.5 * peaks[0], peaks
