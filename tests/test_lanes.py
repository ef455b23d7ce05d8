"""The outbox's lanes on a real Redis: where envelopes wait, how campaigns come and go,
what the lane figures say, and envelopes of the earlier format."""

from __future__ import annotations

import json
import time

import pytest
import redis
import requests

from mailqueue.core.envelope import Envelope, envelopes_for, lane_for
from mailqueue.core.payload import build_payload, prepare
from mailqueue.core.routing import resolve_route
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.store.outbox import Outbox

KEYS = Keys()
MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Hi",
    "text": "Hello",
}


@pytest.fixture
def outbox(redis_client: redis.Redis) -> Outbox:
    box = Outbox(redis_client, KEYS, reclaim_idle=60, ttl=60)
    box.ensure_group()
    return box


def envelope(send_id: str, group: str | None = None, stream: str = "transactional") -> Envelope:
    [built] = envelopes_for(prepare(MESSAGE), send_id=send_id, stream=stream, group=group)
    return built


def add(client: redis.Redis, outbox: Outbox, *envelopes: Envelope) -> None:
    with client.pipeline() as pipe:
        for item in envelopes:
            outbox.add(pipe, item)
        pipe.execute()


# -- pure: lanes and envelopes --------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "campaign", "parts", "lane"),
    [
        ("transactional", None, 1, "transactional"),
        ("bulk", None, 1, "bulk"),
        ("transactional", "group-1", 1, "bulk"),
        ("transactional", None, 3, "bulk"),
    ],
)
def test_lane_for(stream: str, campaign: str | None, parts: int, lane: str) -> None:
    assert lane_for(stream=stream, campaign=campaign, parts=parts) == lane  # type: ignore[arg-type]


def test_an_envelope_carries_no_path_url_or_token() -> None:
    settings = Settings(api_token="tok-SECRET", sandbox_id="42", api_url="http://127.0.0.1:1/api/")
    message = {**MESSAGE, "stream": "bulk", "account": "eu"}
    [built] = envelopes_for(prepare(message, settings), send_id="s1", stream="bulk", account="eu")

    raw = built.encode()

    for absent in ("send/42", "127.0.0.1", "tok-SECRET", '"path"'):
        assert absent not in raw
    decoded = Envelope.decode(raw)
    assert (decoded.mail_stream, decoded.account, decoded.lane) == ("bulk", "eu", "bulk")


def test_the_worker_builds_the_path_from_its_own_route() -> None:
    built = envelope("s1")
    sandboxed = resolve_route(Settings(api_token="t", sandbox_id="7"))

    assert built.call_for(resolve_route(Settings(api_token="t"))).path == "send"
    assert built.call_for(sandboxed).path == "send/7"


def test_an_envelope_of_the_earlier_format_keeps_its_sandbox() -> None:
    legacy = {
        "id": "s1",
        "part": 0,
        "attempt": 2,
        "call": {"path": "batch/55", "json": {"base": {}, "requests": []}, "recipients": []},
    }

    decoded = Envelope.decode(json.dumps(legacy))

    assert (decoded.kind, decoded.legacy_sandbox, decoded.attempt) == ("batch", "55", 2)
    assert decoded.call.path == "batch"
    route = resolve_route(Settings(api_token="t"), fallback_sandbox=decoded.legacy_sandbox)
    assert decoded.call_for(route).path == "batch/55"
    assert route.base_url == "https://sandbox.api.mailtrap.io/api/"


# -- the layout on Redis -------------------------------------------------------------------


def test_lone_transactional_sends_wait_in_the_transactional_stream(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    add(redis_client, outbox, envelope("s1"))

    assert redis_client.xlen(KEYS.outbox) == 1
    assert outbox.campaign_queues() == []


def test_each_campaign_waits_in_a_stream_of_its_own(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    add(
        redis_client,
        outbox,
        envelope("a1", group="big"),
        envelope("a2", group="big"),
        envelope("b1", group="small"),
        envelope("n1", stream="bulk"),
    )

    queues = outbox.campaign_queues()
    assert queues == [
        KEYS.campaign_queue("transactional", "send", "big"),
        KEYS.campaign_queue("transactional", "send", "small"),
        KEYS.campaign_queue("bulk", "send", ""),
    ]
    assert [redis_client.xlen(queue) for queue in queues] == [2, 1, 1]
    assert outbox.waiting() == 4


def test_an_empty_campaign_stream_is_retired_but_not_one_with_work_in_flight(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    add(redis_client, outbox, envelope("a1", group="c"))
    [queue] = outbox.campaign_queues()
    [held] = outbox.read("worker-1", queue, 10)

    assert outbox.retire(queue) is False  # read, not yet acknowledged
    with redis_client.pipeline() as pipe:
        outbox.ack(pipe, [held])
        pipe.execute()
    assert outbox.retire(queue) is True
    assert outbox.campaign_queues() == []
    assert not redis_client.exists(queue)


def test_a_campaign_stream_written_again_after_retiring_is_read_again(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    add(redis_client, outbox, envelope("a1", group="c"))
    [queue] = outbox.campaign_queues()
    with redis_client.pipeline() as pipe:
        outbox.ack(pipe, outbox.read("worker-1", queue, 10))
        pipe.execute()
    outbox.retire(queue)

    add(redis_client, outbox, envelope("a2", group="c"))

    assert [e.send_id for e in outbox.read("worker-1", queue, 10)] == ["a2"]


def test_a_due_retry_goes_back_to_its_campaigns_stream(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    retry = envelope("a1", group="c")
    with redis_client.pipeline() as pipe:
        outbox.schedule(pipe, retry, time.time() - 1)
        pipe.execute()

    assert outbox.move_due() == 1
    assert outbox.campaign_queues() == [outbox.stream_for(retry)]
    assert [e.send_id for e in outbox.read("worker-1", outbox.stream_for(retry), 10)] == ["a1"]


def test_a_retry_scheduled_by_the_earlier_format_is_moved_and_decoded(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    [call] = build_payload(MESSAGE)
    legacy = json.dumps({"id": "s1", "part": 0, "attempt": 1, "call": call.to_dict()})
    redis_client.zadd(KEYS.retry, {"S|" + legacy: time.time() - 1})

    assert outbox.move_due() == 1
    [moved] = outbox.read("worker-1", KEYS.outbox, 10)
    assert (moved.send_id, moved.kind, moved.attempt) == ("s1", "send", 1)


def test_lane_stats_count_backlog_in_flight_and_age_per_lane_and_stream(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    add(
        redis_client,
        outbox,
        envelope("t1"),
        envelope("t2"),
        envelope("c1", group="c", stream="bulk"),
        envelope("c2", group="d", stream="bulk"),
    )
    outbox.read("worker-1", KEYS.outbox, 1)

    stats = {(s.lane, s.stream): s for s in outbox.lane_stats()}

    transactional = stats["transactional", "transactional"]
    assert (transactional.waiting, transactional.in_flight) == (1, 1)
    assert transactional.oldest_seconds >= 0
    bulk = stats["bulk", "bulk"]
    assert (bulk.waiting, bulk.in_flight, bulk.campaigns) == (2, 0, 2)
    assert stats["bulk", "transactional"].waiting == 0


def test_lane_gauges_are_served_with_the_metrics(
    redis_client: redis.Redis, outbox: Outbox
) -> None:
    from mailqueue.metrics.instruments import start_metrics_server

    add(redis_client, outbox, envelope("c1", group="c", stream="bulk"))
    server, _ = start_metrics_server(0, addr="127.0.0.1", redis_client=redis_client)
    try:
        body = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()

    assert 'mailqueue_lane_backlog{lane="bulk",stream="bulk"} 1.0' in body
    assert 'mailqueue_lane_backlog{lane="transactional",stream="transactional"} 0.0' in body
    assert 'mailqueue_lane_campaigns{stream="bulk"} 1.0' in body
