"""Campaigns steered on a real Redis, delivered by the drain loop over an in-memory transport.

The same behaviours are proven end to end with real workers in ``e2e/test_steering.py``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.events import normalize_event
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import PermanentDeliveryError, ValidationError
from mailqueue.settings import RateLimit, Settings
from mailqueue.store import status
from mailqueue.store.campaigns import auto_pause_reason, record_from_fields
from mailqueue.testing import MemoryTransport, accept_all

# -- the record, pure ------------------------------------------------------


def test_counts_add_up_to_recipients_and_waiting_is_always_there() -> None:
    record = record_from_fields(
        "c", {"state": "running", "recipients": "5", "n:waiting": "2", "n:sent": "3"}, 0
    )
    assert record["counts"] == {"waiting": 2, "sent": 3}
    assert sum(record["counts"].values()) == record["recipients"]


def test_a_running_campaign_with_nothing_waiting_is_finished() -> None:
    record = record_from_fields(
        "c", {"state": "running", "recipients": "3", "n:waiting": "0", "n:sent": "3"}, 0
    )
    assert (record["state"], record["eta_seconds"]) == ("finished", 0.0)


def test_recipients_in_flight_read_waiting() -> None:
    record = record_from_fields(
        "c", {"state": "running", "recipients": "4", "n:waiting": "1", "n:sending": "3"}, 0
    )
    assert record["counts"] == {"waiting": 4}


def test_a_cancelled_campaign_reads_its_waiting_recipients_as_cancelled() -> None:
    fields = {"state": "cancelled", "recipients": "6", "n:waiting": "3", "n:sent": "2"}
    fields["n:sending"] = "1"
    record = record_from_fields("c", fields, 0)
    assert record["state"] == "cancelled"
    # The one a worker had claimed is being cancelled: nothing waits any more.
    assert record["counts"] == {"cancelled": 3, "sent": 2, "cancelling": 1, "waiting": 0}
    assert sum(record["counts"].values()) == record["recipients"]


def test_eta_is_waiting_over_the_rate_of_hand_overs() -> None:
    fields = {"state": "running", "recipients": "300", "n:waiting": "200", "n:sent": "100"}
    fields.update(first_sent_at="1000", last_sent_at="1010", handed="100")
    record = record_from_fields("c", fields, 0)
    assert (record["rate_per_second"], record["eta_seconds"]) == (10.0, 20.0)


def test_a_paused_campaign_has_no_eta() -> None:
    fields = {"state": "paused", "recipients": "300", "n:waiting": "200", "n:sent": "100"}
    fields.update(first_sent_at="1000", last_sent_at="1010", handed="100")
    assert record_from_fields("c", fields, 0)["eta_seconds"] is None


def test_auto_pause_waits_for_enough_tracked_recipients() -> None:
    settings = Settings(campaign_min_tracked=100, campaign_bounce_rate=0.05)
    assert auto_pause_reason({"sent": 50, "bounced": 40}, settings) is None
    reason = auto_pause_reason({"sent": 90, "bounced": 10, "waiting": 900}, settings)
    assert reason is not None and reason.startswith("bounce rate 10.00%")


def test_auto_pause_on_complaints_before_bounces() -> None:
    settings = Settings(campaign_min_tracked=10, campaign_complaint_rate=0.01)
    reason = auto_pause_reason({"delivered": 90, "complained": 5, "bounced": 5}, settings)
    assert reason is not None and reason.startswith("complaint rate")
    assert auto_pause_reason({"delivered": 1000}, settings) is None


# -- steering, with the drain loop ---------------------------------------------


def message(index: int, **extra: Any) -> dict[str, Any]:
    return {
        "from_email": "news@example.com",
        "to": [f"reader{index}@example.com"],
        "subject": "News",
        "text": "Hello",
        **extra,
    }


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    wakeups: queue.Queue[dict[str, Any]] = queue.Queue()
    # One call per message (no coalescing), one call at a time, so that a
    # change between calls shows.
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        coalesce=False,
        calls_in_flight=1,
    )
    client = Client(settings, publish=wakeups.put)
    yield client
    client.close()


def drain(client: Client, handler: Callable[[ApiCall], list[RequestResult]] = accept_all) -> Any:
    transport = MemoryTransport(handler)
    Drainer(client.drain_parts, transport=transport).drain(budget=5)
    return transport


def counts(client: Client, name: str) -> dict[str, int]:
    record = client.get_campaign(name)
    assert record is not None
    return record["counts"]


def test_an_unknown_campaign_reads_none(client: Client) -> None:
    assert client.get_campaign("nothing-here") is None
    assert client.get_campaign("bad name!") is None


def test_enqueue_many_names_the_campaign_of_every_message(client: Client) -> None:
    ids = client.enqueue_many([message(i) for i in range(5)], campaign="spring")
    record = client.get_campaign("spring")
    assert record is not None
    assert (record["name"], record["state"], record["recipients"]) == ("spring", "running", 5)
    assert record["counts"] == {"waiting": 5}
    assert {client.get_status(i)["campaign"] for i in ids} == {"spring"}  # type: ignore[index]


def test_a_bad_campaign_name_is_refused_before_anything_is_queued(client: Client) -> None:
    with pytest.raises(ValidationError) as info:
        client.enqueue_many([message(0)], campaign="no spaces")
    assert info.value.field == "campaign"
    assert client.outbox.waiting() == 0


def test_a_delivered_campaign_is_finished_with_every_recipient_sent(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(7)], campaign="spring")
    drain(client)
    record = client.get_campaign("spring")
    assert record is not None
    assert (record["state"], record["counts"]) == ("finished", {"sent": 7, "waiting": 0})


def test_a_paused_campaign_makes_no_call_until_resumed(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(4)], campaign="spring")
    assert client.pause_campaign("spring")["state"] == "paused"
    assert drain(client).calls == []
    assert client.outbox.waiting() == 0  # held aside, not spinning in the outbox
    assert counts(client, "spring") == {"waiting": 4}
    assert client.resume_campaign("spring")["state"] == "running"
    assert len(drain(client).calls) == 4
    assert counts(client, "spring") == {"sent": 4, "waiting": 0}


def test_a_pause_between_calls_stops_the_next_call(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(10)], campaign="spring")
    made = []

    def pause_after_three(call: ApiCall) -> list[RequestResult]:
        made.append(call)
        if len(made) == 3:
            client.pause_campaign("spring")
        return accept_all(call)

    drain(client, pause_after_three)
    assert len(made) == 3
    assert counts(client, "spring") == {"sent": 3, "waiting": 7}
    client.resume_campaign("spring")
    drain(client)
    assert counts(client, "spring") == {"sent": 10, "waiting": 0}


def test_a_cancel_gives_every_unsent_recipient_cancelled_with_exact_counts(
    client: Client,
) -> None:
    ids = client.enqueue_many([message(i) for i in range(10)], campaign="spring")
    made = []

    def cancel_after_four(call: ApiCall) -> list[RequestResult]:
        made.append(call)
        if len(made) == 4:
            client.cancel_campaign("spring")
        return accept_all(call)

    drain(client, cancel_after_four)
    record = client.get_campaign("spring")
    assert record is not None
    assert record["state"] == "cancelled"
    assert record["counts"] == {"sent": 4, "cancelled": 6, "waiting": 0}
    states = [client.get_status(i)["state"] for i in ids]  # type: ignore[index]
    assert sorted(states) == ["cancelled"] * 6 + ["sent"] * 4
    cancelled = next(client.get_status(i) for i in ids if client.store.state(i) == "cancelled")
    assert cancelled is not None
    assert list(cancelled["recipients"].values()) == [{"status": "cancelled", "message_id": None}]


def test_a_cancelled_campaign_cannot_resume_and_stays_cancelled(client: Client) -> None:
    client.enqueue_many([message(0)], campaign="spring")
    client.cancel_campaign("spring")
    with pytest.raises(ValidationError):
        client.resume_campaign("spring")
    assert client.pause_campaign("spring")["state"] == "cancelled"
    with pytest.raises(ValidationError):
        client.enqueue_many([message(1)], campaign="spring")


def test_steering_an_unknown_campaign_is_an_error(client: Client) -> None:
    with pytest.raises(ValidationError) as info:
        client.pause_campaign("never-sent")
    assert info.value.field == "campaign"


def test_a_cancel_while_paused_ends_the_held_parts(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(3)], campaign="spring")
    client.pause_campaign("spring")
    drain(client)
    client.cancel_campaign("spring")
    assert drain(client).calls == []
    assert counts(client, "spring") == {"cancelled": 3, "waiting": 0}


# -- suppressions at claim time ----------------------------------------------


def test_a_suppressed_recipient_is_left_out_and_reads_suppressed(client: Client) -> None:
    client.suppress("B@example.com")
    send_id = client.enqueue(
        {**message(0), "to": ["a@example.com", "b@example.com"]}, idempotency_key=None
    )
    transport = drain(client)
    [call] = transport.calls
    assert [r["email"] for r in call.json["to"]] == ["a@example.com"]
    record = client.get_status(send_id)
    assert record is not None and record["state"] == "sent"
    assert record["recipients"]["b@example.com"] == {"status": "suppressed", "message_id": None}
    assert record["recipients"]["a@example.com"]["status"] == "queued"


def test_a_message_left_with_no_recipient_fails_with_kind_suppressed(client: Client) -> None:
    client.suppress("a@example.com")
    send_id = client.enqueue({**message(0), "to": ["a@example.com"]})
    assert drain(client).calls == []
    record = client.get_status(send_id)
    assert record is not None and record["error"] is not None
    assert (record["state"], record["error"]["kind"]) == ("failed", "suppressed")
    assert record["recipients"] == {"a@example.com": {"status": "suppressed", "message_id": None}}


def test_suppressed_campaign_recipients_count_as_suppressed(client: Client) -> None:
    client.suppress("reader1@example.com")
    client.suppress("reader2@example.com", stream="bulk")
    client.enqueue_many([message(i, stream="bulk") for i in range(4)], campaign="spring")
    assert len(drain(client).calls) == 2
    assert counts(client, "spring") == {"sent": 2, "suppressed": 2, "waiting": 0}


def test_a_bulk_only_suppression_lets_transactional_mail_through(client: Client) -> None:
    client.suppress("a@example.com", stream="bulk")
    client.enqueue({**message(0), "to": ["a@example.com"]})
    assert len(drain(client).calls) == 1


def test_unsuppressing_lets_mail_through_again(client: Client) -> None:
    client.suppress("a@example.com")
    assert client.unsuppress("a@example.com") is True
    client.enqueue({**message(0), "to": ["a@example.com"]})
    assert len(drain(client).calls) == 1


def test_suppressed_recipients_of_a_batch_send_are_left_out(client: Client) -> None:
    client.suppress("reader1@example.com")
    batch = {
        **message(0),
        "to": [f"reader{i}@example.com" for i in range(3)],
        "merge_data": {},
    }
    send_id = client.enqueue(batch)
    [call] = drain(client).calls
    assert [r["to"][0]["email"] for r in call.json["requests"]] == [
        "reader0@example.com",
        "reader2@example.com",
    ]
    record = client.get_status(send_id)
    assert record is not None and record["state"] == "sent"
    assert record["recipients"]["reader1@example.com"]["status"] == "suppressed"


# -- tracking events move campaign counts ------------------------------------


def test_tracking_events_move_recipients_forward_and_can_pause_the_campaign(
    redis_url: str,
) -> None:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        campaign_min_tracked=4,
        campaign_bounce_rate=0.3,
    )
    client = Client(settings, publish=lambda options: None)
    try:
        ids = client.enqueue_many([message(i) for i in range(5)], campaign="spring")
        drain(client)
        message_ids = [
            next(iter(client.get_status(i)["recipients"].values()))["message_id"]  # type: ignore[index]
            for i in ids
        ]
        raw = [
            {"event": "delivery", "message_id": message_ids[0], "event_id": "e0"},
            {"event": "open", "message_id": message_ids[0], "event_id": "e1"},
            {"event": "bounce", "message_id": message_ids[1], "event_id": "e2"},
        ]
        now = int(time.time())
        client.events.apply([normalize_event({**e, "timestamp": now}) for e in raw], "now")
        record = client.get_campaign("spring")
        assert record is not None
        assert record["counts"] == {"sent": 3, "opened": 1, "bounced": 1, "waiting": 0}
        assert record["state"] == "finished"
        second = {"event": "bounce", "message_id": message_ids[2], "event_id": "e3"}
        client.events.apply([normalize_event({**second, "timestamp": now})], "now")
        record = client.get_campaign("spring")
        assert record is not None
        assert record["state"] == "paused"
        assert record["reason"] is not None and record["reason"].startswith("bounce rate 40.00%")
        assert client.get_suppression("reader1@example.com") is not None
    finally:
        client.close()


def test_a_campaigns_updated_at_follows_its_sends_and_its_tracking_events(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = client.enqueue_many([message(i) for i in range(2)], campaign="spring")
    queued = client.get_campaign("spring")
    # The workers record their outcomes at a time of their own.
    monkeypatch.setattr(status, "now_iso", lambda: "2099-01-01T00:00:00.000Z")
    drain(client)
    sent = client.get_campaign("spring")
    message_id = next(iter(client.get_status(ids[0])["recipients"].values()))["message_id"]  # type: ignore[index]
    later = "2100-01-01T00:00:00.000Z"
    event = {"event": "delivery", "message_id": message_id, "event_id": "d0"}

    client.events.apply([normalize_event({**event, "timestamp": int(time.time())})], later)

    delivered = client.get_campaign("spring")
    assert queued is not None and sent is not None and delivered is not None
    assert queued["updated_at"] is not None and sent["updated_at"] is not None
    assert queued["updated_at"] < "2099"
    assert sent["updated_at"] == "2099-01-01T00:00:00.000Z"
    assert delivered["updated_at"] == later


# -- single sends: cancel, reschedule, expiry --------------------------------


def test_cancel_ends_a_scheduled_send_at_once(client: Client) -> None:
    send_id = client.enqueue({**message(0), "send_at": time.time() + 3600})
    record = client.cancel(send_id)
    assert record["state"] == "cancelled"
    assert record["recipients"] == {
        "reader0@example.com": {"status": "cancelled", "message_id": None}
    }
    assert client.outbox.next_retry_due() is None


def test_cancel_of_a_queued_send_ends_it_when_a_worker_meets_it(client: Client) -> None:
    send_id = client.enqueue(message(0))
    assert client.cancel(send_id)["state"] == "cancelled"
    assert drain(client).calls == []
    record = client.get_status(send_id)
    assert record is not None and record["state"] == "cancelled"
    assert record["recipients"]["reader0@example.com"]["status"] == "cancelled"


def test_cancel_or_reschedule_of_a_sent_send_is_refused(client: Client) -> None:
    send_id = client.enqueue(message(0))
    drain(client)
    with pytest.raises(ValidationError):
        client.cancel(send_id)
    with pytest.raises(ValidationError):
        client.reschedule(send_id, time.time() + 60)
    with pytest.raises(ValidationError):
        client.cancel("no-such-send")


def test_reschedule_holds_a_queued_send_until_its_new_time(client: Client) -> None:
    send_id = client.enqueue(message(0))
    later = time.time() + 3600
    record = client.reschedule(send_id, later)
    assert record["send_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(later)))
    assert drain(client).calls == []
    assert client.outbox.next_retry_due() == pytest.approx(later, abs=0.01)


def test_reschedule_brings_a_scheduled_send_forward(client: Client) -> None:
    send_id = client.enqueue({**message(0), "send_at": time.time() + 3600})
    client.reschedule(send_id, time.time() - 1)
    assert len(drain(client).calls) == 1
    assert client.store.state(send_id) == "sent"


def test_a_send_past_its_expiry_ends_expired_without_a_call(client: Client) -> None:
    send_id = client.enqueue({**message(0), "expires_at": time.time() - 1})
    assert drain(client).calls == []
    record = client.get_status(send_id)
    assert record is not None and record["state"] == "expired"
    assert record["recipients"]["reader0@example.com"]["status"] == "expired"


def test_expires_at_before_send_at_is_refused(client: Client) -> None:
    with pytest.raises(ValidationError) as info:
        client.enqueue({**message(0), "send_at": 2000000000, "expires_at": 1990000000})
    assert info.value.field == "expires_at"


def test_a_failed_part_requeued_from_the_dead_letters_counts_again(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(2)], campaign="spring")

    def refuse(call: ApiCall) -> list[RequestResult]:
        raise PermanentDeliveryError("refused", status_code=401, path=call.path)

    drain(client, refuse)
    assert counts(client, "spring") == {"failed": 2, "waiting": 0}
    assert client.requeue_dead_letters(wake=False) == 2
    assert counts(client, "spring") == {"waiting": 2}
    drain(client)
    assert counts(client, "spring") == {"sent": 2, "waiting": 0}
