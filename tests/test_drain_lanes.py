"""The drain loop's lanes over an in-memory transport: transactional mail first, campaigns
in turn, several calls in flight, routes never mixed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import Account, RateLimit, Settings
from mailqueue.testing import MemoryTransport, accept_all

DEADLINE = 20.0


def message(subject: str, to: str = "alice@example.com", **extra: Any) -> dict[str, Any]:
    return {"from_email": "shop@example.com", "to": [to], "subject": subject, "text": "x", **extra}


def subjects(call: ApiCall) -> list[str]:
    body = call.json
    if "requests" in body:
        base = body["base"].get("subject")
        return [request.get("subject", base) for request in body["requests"]]
    return [body["subject"]]


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        calls_in_flight=3,
    )
    client = Client(settings, publish=lambda options: None)
    yield client
    client.close()


def test_a_transactional_send_goes_out_while_campaign_calls_are_stuck(client: Client) -> None:
    gate = threading.Event()
    stuck = threading.Semaphore(0)

    def handler(call: ApiCall) -> list[RequestResult]:
        if any(subject.startswith(("promo", "other")) for subject in subjects(call)):
            stuck.release()
            assert gate.wait(DEADLINE)
        return accept_all(call)

    transport = MemoryTransport(handler)
    client.enqueue_many(
        [message(f"promo {i}", to=f"c{i}@example.com", stream="bulk") for i in range(2)]
    )
    client.enqueue_many(
        [message(f"other {i}", to=f"d{i}@example.com", stream="bulk") for i in range(2)]
    )
    drainer = Drainer(client.drain_parts, transport=transport)
    drain = threading.Thread(target=drainer.drain)
    drain.start()
    try:
        # Both bulk threads (of three) are held by campaign calls.
        assert stuck.acquire(timeout=DEADLINE) and stuck.acquire(timeout=DEADLINE)
        reset = client.enqueue(message("password reset"))

        sent = threading.Event()

        def watch() -> None:
            while not gate.is_set():
                if client.store.state(reset) == "sent":
                    sent.set()
                    return
                gate.wait(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert sent.wait(DEADLINE), "the reset waited for the campaigns"
    finally:
        gate.set()
        drain.join(DEADLINE)
        drainer.close()
    watcher.join(DEADLINE)


def test_campaigns_take_turns(client: Client) -> None:
    transport = MemoryTransport()
    big = client.enqueue_many(
        [message(f"big {i}", to=f"b{i}@example.com", stream="bulk") for i in range(6)]
    )
    small = client.enqueue_many([message("small", to="s@example.com", stream="bulk")])
    drainer = Drainer(
        Client(
            client.settings.replace(coalesce=False, calls_in_flight=1), publish=lambda o: None
        ).drain_parts,
        transport=transport,
    )
    try:
        drainer.drain()
    finally:
        drainer.close()

    order = [subject for call in transport.calls for subject in subjects(call)]
    assert sorted(order) == sorted([f"big {i}" for i in range(6)] + ["small"])
    assert order.index("small") <= 1
    assert {client.store.state(send_id) for send_id in [*big, *small]} == {"sent"}


def test_a_coalesced_call_never_mixes_streams_or_accounts(redis_url: str) -> None:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        accounts={"eu": Account(name="eu", api_token="eu-token")},
    )
    client = Client(settings, publish=lambda options: None)
    transport = MemoryTransport()
    ids = [
        client.enqueue(message("a1")),
        client.enqueue(message("a2")),
        client.enqueue(message("eu1", account="eu")),
        client.enqueue(message("eu2", account="eu")),
    ]
    drainer = Drainer(client.drain_parts, transport=transport)
    try:
        drainer.drain()
    finally:
        drainer.close()
        client.close()

    groups = sorted(sorted(subjects(call)) for call in transport.calls)
    assert groups == [["a1", "a2"], ["eu1", "eu2"]]
    assert all(call.path == "batch" for call in transport.calls)
    assert {client.store.state(send_id) for send_id in ids} == {"sent"}
