"""The drain loop's branches, over an in-memory transport and a real Redis for the stores.

The end-to-end tests prove the same loop against the local Mailtrap over
HTTP and real workers; here each branch is set up and observed directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.calltag import MAX_TAG_GROWTH, Tag, tag_call
from mailqueue.core.payload import (
    BATCH_WRAPPER_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    ApiCall,
    build_payload,
    call_size,
    coalesce,
)
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.drain import CAMPAIGN_LOOK_INTERVAL, Drainer, group_calls
from mailqueue.errors import PermanentDeliveryError, TransientDeliveryError
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.outbox import Envelope
from mailqueue.testing import MemoryTransport, accept_all


def message(recipient: str, **extra: Any) -> dict[str, Any]:
    base = {"from_email": "shop@example.com", "to": [recipient], "subject": "Hi", "text": "Hi"}
    return base | extra


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    settings = Settings(
        broker_url=redis_url, api_token="t", rate_limit=RateLimit.parse("100000/1s"), max_retries=3
    )
    client = Client(settings, publish=lambda options: None)
    yield client
    client.close()


def drain(client: Client, transport: MemoryTransport) -> Any:
    return Drainer(client.drain_parts, transport).drain(budget=10)


def state(client: Client, send_id: str) -> str | None:
    return client.store.state(send_id)


def test_waiting_single_sends_go_out_in_one_coalesced_batch_call(client: Client) -> None:
    ids = [client.enqueue(message(f"r{i}@example.com")) for i in range(3)]
    transport = MemoryTransport()

    report = drain(client, transport)

    assert transport.paths() == ["batch"]
    assert [state(client, send_id) for send_id in ids] == ["sent"] * 3
    assert (report.calls, report.sent) == (1, 3)
    assert client.outbox.waiting() == 0


def test_a_whole_call_400_sends_each_message_alone_and_fails_only_the_bad_one(
    client: Client,
) -> None:
    good = client.enqueue(message("good@example.com"))
    bad = client.enqueue(message("bad@example.com"))

    def refuse_batches_and_bad(call: ApiCall) -> list[RequestResult]:
        if call.path == "batch" or "bad@example.com" in call.recipients[0]:
            raise PermanentDeliveryError("refused", status_code=400, path=call.path)
        return accept_all(call)

    transport = MemoryTransport(refuse_batches_and_bad)
    report = drain(client, transport)

    assert transport.paths() == ["batch", "send", "send"]
    assert state(client, good) == "sent"
    assert state(client, bad) == "failed"
    assert (report.sent, report.failed) == (1, 1)
    assert [send_id for send_id, _ in client.outbox.dead_letters()] == [bad]


def test_a_permanent_error_on_a_lone_send_fails_it_and_keeps_a_dead_letter(
    client: Client,
) -> None:
    send_id = client.enqueue(message("a@example.com"))

    def refuse(call: ApiCall) -> list[RequestResult]:
        raise PermanentDeliveryError("unauthorized", status_code=401, path=call.path)

    drain(client, MemoryTransport(refuse))

    record = client.get_status(send_id)
    assert record is not None and record["state"] == "failed"
    assert record["error"] is not None and record["error"]["status_code"] == 401
    assert [sid for sid, _ in client.outbox.dead_letters()] == [send_id]


def test_a_transient_error_schedules_a_retry_with_the_error_recorded(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com"))

    def unavailable(call: ApiCall) -> list[RequestResult]:
        raise TransientDeliveryError("unavailable", status_code=503, path=call.path)

    report = drain(client, MemoryTransport(unavailable))

    record = client.get_status(send_id)
    assert record is not None and record["state"] == "retrying"
    assert record["error"] is not None and record["error"]["kind"] == "transient"
    assert "next_attempt_at" in record
    assert report.retried == 1
    assert client.outbox.next_retry_due() is not None
    assert client.outbox.waiting() == 0


def test_a_transient_error_past_the_retries_fails_the_send(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com"))
    envelope = client.outbox.read("setup", client.keys.outbox, 1)[0]
    with client.redis.pipeline() as pipe:
        client.outbox.ack(pipe, [envelope])
        envelope.attempt = client.settings.max_retries
        client.outbox.add(pipe, envelope)
        pipe.execute()

    def unavailable(call: ApiCall) -> list[RequestResult]:
        raise TransientDeliveryError("unavailable", status_code=503, path=call.path)

    drain(client, MemoryTransport(unavailable))

    assert state(client, send_id) == "failed"


def test_a_batch_answer_with_some_requests_refused_is_partially_sent(client: Client) -> None:
    send_id = client.enqueue(
        message("a@example.com", to=["a@example.com", "b@example.com"], merge_data={})
    )

    def refuse_b(call: ApiCall) -> list[RequestResult]:
        return [
            RequestResult({r: None for r in request}, error="invalid address")
            if "b@example.com" in request
            else RequestResult({r: "m-" + r for r in request})
            for request in call.recipients
        ]

    drain(client, MemoryTransport(refuse_b))

    record = client.get_status(send_id)
    assert record is not None and record["state"] == "partially_sent"
    assert record["recipients"]["a@example.com"]["status"] == "queued"
    assert record["recipients"]["b@example.com"]["status"] == "failed"


def test_a_part_already_done_is_acknowledged_and_not_sent_again(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com"))
    transport = MemoryTransport()
    drain(client, transport)
    # The same envelope delivered again, as after a lost acknowledgement.
    (call,) = build_payload(message("a@example.com"), client.settings)
    with client.redis.pipeline() as pipe:
        client.outbox.add(pipe, Envelope(send_id=send_id, part=0, body=call))
        pipe.execute()

    report = drain(client, transport)

    assert len(transport.calls) == 1
    assert report.skipped == 1
    assert client.outbox.waiting() == 0


def test_more_waiting_sends_than_one_batch_takes_go_out_in_several_calls(
    client: Client,
) -> None:
    client.enqueue_many([message(f"r{i}@example.com") for i in range(MAX_BATCH_REQUESTS + 1)])
    transport = MemoryTransport()

    drain(client, transport)

    sizes = sorted(len(call.recipients) for call in transport.calls)
    assert sizes == [1, MAX_BATCH_REQUESTS]


# -- grouping, pure ---------------------------------------------------------


def envelopes(count: int, **extra: Any) -> list[Envelope]:
    result = []
    for i in range(count):
        (call,) = build_payload(message(f"r{i}@example.com", **extra), Settings())
        result.append(Envelope(send_id=f"s{i}", part=0, body=call))
    return result


def test_grouping_starts_a_new_call_before_the_byte_limit() -> None:
    waiting = envelopes(5)
    one = call_size(waiting[0].call)
    limit = BATCH_WRAPPER_BYTES + 3 * (one + 1)  # the wrapper and three sends, not four

    groups = group_calls(waiting, coalescing=True, max_bytes=limit)

    assert [len(group) for group in groups] == [3, 2]


def sends_filling_a_batch(count: int, per_call: int) -> list[Envelope]:
    """``count`` sends of which ``per_call``, untagged, fill a batch call to within 4 bytes a send.

    No two share a value, so coalescing leaves every byte of each in its request.
    """

    def with_content(length: int) -> list[Envelope]:
        result = []
        for i in range(count):
            attachment = {"filename": f"a{i:03}.bin", "content": f"{i:03}A".ljust(length, "A")}
            unique = message(
                f"r{i:03}@example.com",
                from_email=f"shop{i:03}@example.com",
                subject=f"S{i:03}",
                text=f"T{i:03}",
                attachments=[attachment],
            )
            (call,) = build_payload(unique, Settings())
            result.append(Envelope(send_id=f"s{i:03}", part=0, body=call))
        return result

    bare = with_content(4)[0].body_bytes - 4
    weight = (MAX_BATCH_BYTES - BATCH_WRAPPER_BYTES) // per_call - 1
    return with_content((weight - bare) // 4 * 4)


def tagged_groups(groups: list[list[Envelope]]) -> list[list[bool]]:
    """Which requests of each group's coalesced call carry their tag."""
    result = []
    for group in groups:
        call = coalesce([envelope.call for envelope in group])
        tagged_call, tagged = tag_call(call, [Tag(e.send_id, e.part, 0, 0) for e in group])
        assert call_size(tagged_call) <= MAX_BATCH_BYTES
        result.append(tagged)
    return result


def test_coalesced_sends_keep_room_for_their_tags_under_the_batch_limit() -> None:
    waiting = sends_filling_a_batch(30, per_call=25)

    packed = group_calls(waiting, coalescing=True)
    roomy = group_calls(waiting, coalescing=True, room_per_request=MAX_TAG_GROWTH)

    # Packed to the byte, the first call has no room left for tags.
    assert [len(group) for group in packed] == [25, 5]
    assert not any(tagged_groups(packed)[0])
    # With room kept, every request of every call is tagged.
    assert len(roomy) == 2
    assert all(all(tagged) for tagged in tagged_groups(roomy))


def test_grouping_starts_a_new_call_at_the_request_limit() -> None:
    groups = group_calls(envelopes(5), coalescing=True, max_requests=2)

    assert [len(group) for group in groups] == [2, 2, 1]


def test_without_coalescing_every_send_is_its_own_call() -> None:
    groups = group_calls(envelopes(3), coalescing=False)

    assert [len(group) for group in groups] == [1, 1, 1]


def test_a_batch_call_is_never_combined_with_others() -> None:
    (batch,) = build_payload(
        message("a@example.com", to=["a@example.com", "b@example.com"], merge_data={}),
        Settings(),
    )
    waiting = [*envelopes(2), Envelope(send_id="b", part=0, body=batch), *envelopes(1)]

    groups = group_calls(waiting, coalescing=True)

    # The batch call goes alone; the single sends around it share one call.
    assert [[e.send_id for e in group] for group in groups] == [["b"], ["s0", "s1", "s0"]]


def test_a_drain_serving_lone_sends_asks_for_the_campaign_list_now_and_then(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = client.drain_parts
    looks: list[float] = []
    campaign_queues = parts.outbox.campaign_queues

    def counted() -> list[str]:
        looks.append(time.monotonic())
        return campaign_queues()

    monkeypatch.setattr(parts.outbox, "campaign_queues", counted)
    lone = [client.enqueue(message("first@example.com"))]

    def steady_traffic(call: ApiCall) -> list[RequestResult]:
        # Each call takes a while, and a lone send arrives during each of the first six.
        if len(transport.calls) <= 6:
            lone.append(client.enqueue(message(f"r{len(transport.calls)}@example.com")))
        time.sleep(0.2)
        return accept_all(call)

    transport = MemoryTransport(steady_traffic)
    started = time.monotonic()
    Drainer(parts, transport).drain(budget=10)
    elapsed = time.monotonic() - started

    assert len(transport.calls) == 7
    assert [state(client, send_id) for send_id in lone] == ["sent"] * 7
    # Found empty, the list is asked for again after CAMPAIGN_LOOK_INTERVAL at
    # the soonest, or when the drain is about to leave with work waiting.
    assert len(looks) <= elapsed / CAMPAIGN_LOOK_INTERVAL + 3


def test_a_campaign_queued_while_a_drain_serves_lone_sends_goes_out_in_that_drain(
    client: Client,
) -> None:
    lone = [client.enqueue(message("first@example.com"))]
    spring: list[str] = []

    def steady_traffic(call: ApiCall) -> list[RequestResult]:
        if len(transport.calls) <= 3:
            lone.append(client.enqueue(message(f"r{len(transport.calls)}@example.com")))
        if len(transport.calls) == 2:
            spring.extend(client.enqueue_many([message("c@example.com")], campaign="spring"))
        time.sleep(0.1)
        return accept_all(call)

    transport = MemoryTransport(steady_traffic)
    report = Drainer(client.drain_parts, transport).drain(budget=10)

    assert [state(client, send_id) for send_id in lone + spring] == ["sent"] * 5
    assert report.sent == 5
