"""The claim stage: each claim answer sends an envelope on, or steers it here (real Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from mailqueue.client import Client
from mailqueue.core.envelope import Envelope
from mailqueue.deliver.claims import call_deadline, lease_for
from mailqueue.deliver.drain import Drainer
from mailqueue.deliver.outcomes import DrainReport
from mailqueue.settings import Settings
from mailqueue.store.keys import OUTBOX_GROUP
from mailqueue.store.status import PartResult


def message(*recipients: str, **extra: Any) -> dict[str, Any]:
    base = {"from_email": "shop@example.com", "to": list(recipients), "subject": "S", "text": "T"}
    return base | extra


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    client = Client(Settings(broker_url=redis_url, api_token="t"), publish=lambda options: None)
    yield client
    client.close()


def read_all(client: Client) -> list[Envelope]:
    return [
        envelope
        for stream in client.outbox.streams()
        for envelope in client.outbox.read("worker-1", stream, 100)
    ]


def pending(client: Client) -> int:
    return sum(
        int(client.redis.xpending(stream, OUTBOX_GROUP)["pending"])
        for stream in client.outbox.streams()
    )


def test_the_lease_ends_before_a_dead_workers_parts_are_reclaimed() -> None:
    settings = Settings(reclaim_idle=100.0, connect_timeout=3.0, read_timeout=10.0)

    assert lease_for(settings) == 90.0
    now = time.monotonic()
    assert now + 75.0 <= call_deadline(settings) <= time.monotonic() + 76.0


def test_a_short_lease_still_leaves_a_second_for_the_call() -> None:
    settings = Settings(reclaim_idle=2.0, connect_timeout=3.0, read_timeout=10.0)

    assert call_deadline(settings) >= time.monotonic() + 0.9


def test_a_new_part_goes_on_to_a_call_with_its_lease_noted(client: Client) -> None:
    client.enqueue(message("a@example.com"))
    envelopes = read_all(client)

    claimed = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    assert claimed.ready == envelopes and claimed.doubtful == claimed.lost == []
    assert envelopes[0].lease_ends is not None and envelopes[0].lease_ends > time.monotonic()


def test_a_part_another_live_worker_holds_is_left_pending(client: Client) -> None:
    client.enqueue(message("a@example.com"))
    envelopes = read_all(client)
    Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    again = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    assert again.ready == again.doubtful == again.lost == []
    assert pending(client) == 1


def test_a_part_already_done_is_only_acknowledged(client: Client) -> None:
    # As after a lost acknowledgement: the part was recorded, its entry not acked.
    send_id = client.enqueue(message("a@example.com"))
    envelopes = read_all(client)
    with client.redis.pipeline() as pipe:
        client.store.record(pipe, envelopes[0].ref, PartResult("sent", {"a@example.com": "m-1"}))
        pipe.execute()
    report = DrainReport()

    claimed = Drainer(client.drain_parts).claims.claim(envelopes, report)

    assert claimed.ready == [] and report.skipped == 1
    assert pending(client) == 0
    assert client.store.state(send_id) == "sent"


def test_a_cancelled_send_ends_unsent_and_is_acknowledged(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com"))
    envelopes = read_all(client)
    client.cancel(send_id)

    claimed = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    assert claimed.ready == [] and pending(client) == 0
    assert client.store.state(send_id) == "cancelled"


def test_suppressed_recipients_are_withheld_from_the_call_and_the_rest_go_on(
    client: Client,
) -> None:
    client.suppress("b@example.com")
    client.enqueue(message("a@example.com", "b@example.com"))
    envelopes = read_all(client)

    (envelope,) = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport()).ready

    assert envelope.withheld == ("b@example.com",)
    assert envelope.outgoing is not None
    assert [list(r) for r in envelope.outgoing.recipients] == [["a@example.com"]]
    assert envelope.flat_recipients == ["a@example.com", "b@example.com"]  # the call stays whole


def test_a_part_whose_every_recipient_is_suppressed_fails_without_a_call(client: Client) -> None:
    client.suppress("a@example.com")
    send_id = client.enqueue(message("a@example.com"))

    claimed = Drainer(client.drain_parts).claims.claim(read_all(client), DrainReport())

    record = client.get_status(send_id)
    assert claimed.ready == []
    assert record is not None and record["state"] == "failed"
    assert record["error"] is not None and record["error"]["kind"] == "suppressed"
    assert record["recipients"]["a@example.com"]["status"] == "suppressed"
    assert pending(client) == 0


def test_a_paused_campaigns_part_is_held_until_it_resumes(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com", campaign="spring"))
    envelopes = read_all(client)
    client.pause_campaign("spring")

    claimed = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    assert claimed.ready == [] and pending(client) == 0
    assert client.store.state(send_id) == "queued"
    assert client.redis.llen(client.keys.campaign_held("spring")) == 1


def test_a_part_of_a_cancelled_campaign_ends_cancelled_unsent(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com", campaign="spring"))
    envelopes = read_all(client)
    client.cancel_campaign("spring")

    Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    assert client.store.state(send_id) == "cancelled"
    assert pending(client) == 0


def test_a_part_scheduled_for_later_is_put_back_until_its_time(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com"))
    envelopes = read_all(client)
    later = time.time() + 3600
    client.reschedule(send_id, later)

    claimed = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport())

    assert claimed.ready == [] and pending(client) == 0
    [(_, due)] = cast(
        list[tuple[bytes, float]], client.redis.zrange(client.keys.retry, 0, -1, withscores=True)
    )
    assert due == pytest.approx(later, abs=1.0)
