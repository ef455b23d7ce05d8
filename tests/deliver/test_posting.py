"""The posting stage: routes, one call per group, and what a failed call does (real Redis).

Grouping into calls is specified in test_drain.py (group_calls); here, the
Poster's own branches over the in-memory transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mailqueue.client import Client
from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import ApiCall, build_payload
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.drain import Drainer
from mailqueue.deliver.outcomes import DrainReport
from mailqueue.deliver.posting import messages_in, unknown_outcome, within_caps
from mailqueue.errors import PermanentDeliveryError, TransientDeliveryError
from mailqueue.settings import Account, Settings
from mailqueue.testing import MemoryTransport, accept_all


def message(*recipients: str, **extra: Any) -> dict[str, Any]:
    base = {"from_email": "shop@example.com", "to": list(recipients), "subject": "S", "text": "T"}
    return base | extra


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        reconcile=False,
        accounts={"eu": Account(name="eu", api_token="eu-token")},
    )
    client = Client(settings, publish=lambda options: None)
    yield client
    client.close()


def claimed(client: Client, messages: list[dict[str, Any]]) -> list[Envelope]:
    for each in messages:
        client.enqueue(each)
    envelopes = client.outbox.read("worker-1", client.keys.outbox, 100)
    return Drainer(client.drain_parts).claims.claim(envelopes, DrainReport()).ready


def post_all(client: Client, ready: list[Envelope], transport: MemoryTransport) -> DrainReport:
    drainer = Drainer(client.drain_parts, transport)
    report = DrainReport()
    try:
        for route, group in drainer.poster.calls(ready, report):
            drainer.poster.post(route, group, report)
    finally:
        drainer.close()
    return report


def a_call(*requests: tuple[str, ...]) -> ApiCall:
    (call,) = build_payload(message("x@example.com"))
    return ApiCall("batch", call.json, requests)


def test_caps_take_whole_requests_from_the_first() -> None:
    call = a_call(("a",), ("b", "c"), ("d",))

    assert [within_caps(call, left) for left in (None, 0, 1, 2, 3, 4)] == [3, 0, 1, 1, 2, 3]
    assert messages_in(call) == 4


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (TransientDeliveryError("reset", maybe_delivered=True), True),
        (TransientDeliveryError("server error", status_code=500), True),
        (TransientDeliveryError("bad gateway", status_code=502), True),
        (TransientDeliveryError("unavailable", status_code=503), False),
        (PermanentDeliveryError("refused", status_code=400), False),
    ],
)
def test_only_a_call_that_may_have_reached_mailtrap_has_an_unknown_outcome(
    error: TransientDeliveryError | PermanentDeliveryError, unknown: bool
) -> None:
    assert unknown_outcome(error) is unknown


def test_sends_of_two_accounts_are_never_coalesced_into_one_call(client: Client) -> None:
    ready = claimed(
        client,
        [
            message("a@example.com"),
            message("b@example.com", account="eu"),
            message("c@example.com"),
        ],
    )
    transport = MemoryTransport()

    post_all(client, ready, transport)

    assert sorted(len(call.recipients) for call in transport.calls) == [1, 2]


def test_an_envelope_whose_account_this_worker_lacks_waits_for_a_retry(
    client: Client, redis_url: str
) -> None:
    ready = claimed(client, [message("a@example.com", account="eu")])
    without_eu = Client(Settings(broker_url=redis_url, api_token="t"), publish=lambda o: None)
    transport = MemoryTransport()
    try:
        report = post_all(without_eu, ready, transport)
    finally:
        without_eu.close()

    record = client.get_status(ready[0].send_id)
    assert transport.calls == [] and report.retried == 1
    assert record is not None and record["state"] == "retrying"
    assert record["error"] is not None and "cannot route this message" in record["error"]["message"]


def test_a_coalesced_call_refused_whole_sends_each_alone(client: Client) -> None:
    ready = claimed(client, [message("a@example.com"), message("bad@example.com")])

    def refuse(call: ApiCall) -> list[RequestResult]:
        if call.path == "batch" or call.recipients == (("bad@example.com",),):
            raise PermanentDeliveryError("invalid", status_code=422, path=call.path)
        return accept_all(call)

    transport = MemoryTransport(refuse)
    report = post_all(client, ready, transport)

    assert transport.paths() == ["batch", "send", "send"]
    assert (report.sent, report.failed) == (1, 1)


def test_a_lone_send_refused_with_401_fails_without_a_resend(client: Client) -> None:
    ready = claimed(client, [message("a@example.com")])

    def unauthorized(call: ApiCall) -> list[RequestResult]:
        raise PermanentDeliveryError("unauthorized", status_code=401, path=call.path)

    transport = MemoryTransport(unauthorized)
    report = post_all(client, ready, transport)

    assert transport.paths() == ["send"] and report.failed == 1
    assert client.store.state(ready[0].send_id) == "failed"


def test_a_call_for_a_campaign_paused_meanwhile_is_given_back_unsent(client: Client) -> None:
    send_id = client.enqueue(message("a@example.com", campaign="spring"))
    envelopes = [e for s in client.outbox.streams() for e in client.outbox.read("worker-1", s, 10)]
    ready = Drainer(client.drain_parts).claims.claim(envelopes, DrainReport()).ready
    client.pause_campaign("spring")
    transport = MemoryTransport()

    post_all(client, ready, transport)

    record = client.get_status(send_id)
    assert transport.calls == []
    assert record is not None and record["attempts"] == 0
    assert client.outbox.waiting() == 1  # back in its stream, for the next claim to hold
