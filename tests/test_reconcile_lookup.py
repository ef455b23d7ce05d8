"""Looking up a doubtful part's requests in the local Mailtrap's Email Logs, with a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mailqueue import Settings, build_payload
from mailqueue.client import Client
from mailqueue.core.calltag import Tag, tag_call
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.core.routing import resolve_route
from mailqueue.reconcile.lookup import Doubtful, Reconciler, remaining_call
from mailqueue.store.keys import Keys
from mailqueue.testing import LocalMailtrap


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(logs_delay=0.0) as server:
        yield server


@pytest.fixture
def client(mailtrap: LocalMailtrap, redis_url: str) -> Iterator[Client]:
    settings = Settings(
        api_token=mailtrap.token,
        api_url=mailtrap.url,
        general_api_url=mailtrap.general_url,
        redis_url=redis_url,
    )
    own = Client(settings)
    yield own
    own.close()


def message(**extra: Any) -> dict[str, Any]:
    return {
        "from_email": "sender@example.com",
        "to": ["alice@example.com"],
        "subject": "Your code",
        "text": "1234",
        **extra,
    }


def post(mailtrap: LocalMailtrap, call: ApiCall) -> None:
    answer = requests.post(
        mailtrap.url + call.path, json=call.json, headers={"Api-Token": mailtrap.token}, timeout=5
    )
    assert answer.status_code == 200, answer.text


def look_up(client: Client, *parts: Doubtful) -> list[Any]:
    reconciler = Reconciler(
        settings=client.settings, status=client.store, limiters=client.email_logs_limiters
    )
    try:
        return reconciler.look_up(resolve_route(client.settings), parts)
    finally:
        reconciler.close()


def test_a_tagged_send_that_went_out_is_found_with_its_message_id(
    mailtrap: LocalMailtrap, client: Client
) -> None:
    (call,) = build_payload(message(), client.settings)
    started = time.time()
    tagged, _ = tag_call(call, [Tag("send-1", 0, 0, 0)])
    post(mailtrap, tagged)
    (lookup,) = look_up(client, Doubtful("send-1", 0, 1, call, started))
    assert lookup.found == [0] and lookup.to_send == []
    (accepted,) = mailtrap.accepted
    assert lookup.merge([]) == [RequestResult({"alice@example.com": accepted.message_ids[0]})]


def test_the_window_runs_from_the_calls_start_to_the_look_up_not_to_when_it_gave_up(
    mailtrap: LocalMailtrap, client: Client
) -> None:
    # The call began a minute ago and was given up long since; Mailtrap took
    # the message only now: a window that ended when the worker gave up
    # would miss it.
    (call,) = build_payload(message(), client.settings)
    tagged, _ = tag_call(call, [Tag("send-5", 0, 0, 0)])
    post(mailtrap, tagged)
    (lookup,) = look_up(client, Doubtful("send-5", 0, 1, call, time.time() - 60))
    assert lookup.found == [0]


def test_a_send_that_never_went_out_is_absent(mailtrap: LocalMailtrap, client: Client) -> None:
    (call,) = build_payload(message(), client.settings)
    (lookup,) = look_up(client, Doubtful("send-1", 0, 0, call, time.time()))
    assert lookup.to_send == [0]
    assert not lookup.undecided


def test_only_the_requests_of_a_batch_part_that_are_missing_remain_to_send(
    mailtrap: LocalMailtrap, client: Client
) -> None:
    msg = message(
        to=["a@example.com", "b@example.com", "c@example.com"], merge_data={"a@example.com": {}}
    )
    (call,) = build_payload(msg, client.settings)
    started = time.time()
    tagged, _ = tag_call(call, [Tag("send-2", 0, i, 0) for i in range(3)])
    post(mailtrap, remaining_call(tagged, [0, 2]))
    (lookup,) = look_up(client, Doubtful("send-2", 0, 1, call, started))
    assert lookup.found == [0, 2] and lookup.to_send == [1]
    rest = remaining_call(call, lookup.to_send)
    assert rest.recipients == (("b@example.com",),)
    assert [r["to"] for r in rest.json["requests"]] == [[{"email": "b@example.com"}]]
    merged = lookup.merge([RequestResult({"b@example.com": "new-id"})])
    assert [list(r.message_ids) for r in merged] == [
        ["a@example.com"],
        ["b@example.com"],
        ["c@example.com"],
    ]
    assert merged[1].message_ids["b@example.com"] == "new-id"


def test_an_untagged_send_is_found_by_recipient_and_subject(
    mailtrap: LocalMailtrap, client: Client
) -> None:
    (call,) = build_payload(message(metadata={"k": "x" * 980}), client.settings)
    started = time.time()
    untouched, tagged = tag_call(call, [Tag("send-3", 0, 0, 0)])
    assert tagged == [False]
    post(mailtrap, untouched)
    (lookup,) = look_up(client, Doubtful("send-3", 0, 0, call, started))
    assert lookup.found == [0]


def test_an_untagged_message_already_recorded_for_another_send_is_not_taken_for_this_one(
    mailtrap: LocalMailtrap, client: Client
) -> None:
    (call,) = build_payload(message(metadata={"k": "x" * 980}), client.settings)
    started = time.time()
    post(mailtrap, call)  # an earlier send of the same mail, recorded as sent
    (accepted,) = mailtrap.accepted
    client.redis.set(
        Keys().message_index(accepted.message_ids[0]),
        json.dumps({"send": "earlier", "recipients": ["alice@example.com"]}),
    )
    (lookup,) = look_up(client, Doubtful("send-4", 0, 0, call, started))
    assert lookup.to_send == [0]
