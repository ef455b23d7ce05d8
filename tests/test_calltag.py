"""The worker's tag on each request: added on the wire, never at the cost of acceptance."""

from __future__ import annotations

import copy
from typing import Any

from mailqueue import Settings, build_payload
from mailqueue.calltag import TAG_KEY, Tag, parse_tag, tag_call
from mailqueue.message import custom_variables_size
from mailqueue.payload import coalesce

SETTINGS = Settings(api_token="t")


def message(**extra: Any) -> dict[str, Any]:
    return {
        "from_email": "sender@example.com",
        "to": ["alice@example.com"],
        "subject": "Hi",
        "text": "Hello",
        **extra,
    }


def test_a_single_send_carries_its_tag_and_keeps_its_metadata() -> None:
    (call,) = build_payload(message(metadata={"order": "42"}), SETTINGS)
    before = copy.deepcopy(call.json)
    tagged, which = tag_call(call, [Tag("send-1", 0, 0, 2)])
    assert which == [True]
    assert tagged.json["custom_variables"] == {"order": "42", TAG_KEY: "send-1.0.0.2"}
    assert call.json == before  # the built payload is untouched
    assert tagged.path == call.path and tagged.recipients == call.recipients


def test_metadata_with_no_room_left_goes_untagged_rather_than_refused() -> None:
    metadata = {"k": "x" * 980}
    assert custom_variables_size(metadata) <= 1000
    (call,) = build_payload(message(metadata=metadata), SETTINGS)
    tagged, which = tag_call(call, [Tag("send-1", 0, 0, 0)])
    assert which == [False]
    assert tagged.json == call.json


def test_metadata_that_uses_the_tag_key_itself_is_left_alone() -> None:
    (call,) = build_payload(message(metadata={TAG_KEY: "mine"}), SETTINGS)
    tagged, which = tag_call(call, [Tag("send-1", 0, 0, 0)])
    assert which == [False]
    assert tagged.json["custom_variables"] == {TAG_KEY: "mine"}


def test_each_request_of_a_coalesced_call_carries_its_own_tag_over_base_variables() -> None:
    calls = [
        build_payload(message(to=[f"r{i}@example.com"], metadata={"campaign": "c"}), SETTINGS)[0]
        for i in range(3)
    ]
    batch = coalesce(calls, SETTINGS)
    assert batch.json["base"]["custom_variables"] == {"campaign": "c"}
    tags = [Tag(f"s{i}", 0, 0, 1) for i in range(3)]
    tagged, which = tag_call(batch, tags)
    assert which == [True, True, True]
    for i, request in enumerate(tagged.json["requests"]):
        # A request's custom_variables replace base's, so base's are carried along.
        assert request["custom_variables"] == {"campaign": "c", TAG_KEY: f"s{i}.0.0.1"}
    assert "custom_variables" not in batch.json["requests"][0]


def test_a_merge_metadata_request_keeps_its_own_variables() -> None:
    msg = message(
        to=["a@example.com", "b@example.com"],
        metadata={"m": "1"},
        merge_metadata={"a@example.com": {"who": "a"}},
    )
    (call,) = build_payload(msg, SETTINGS)
    tagged, which = tag_call(call, [Tag("s", 0, 0, 0), Tag("s", 0, 1, 0)])
    assert which == [True, True]
    first, second = tagged.json["requests"]
    assert first["custom_variables"] == {"m": "1", "who": "a", TAG_KEY: "s.0.0.0"}
    assert second["custom_variables"] == {"m": "1", TAG_KEY: "s.0.1.0"}


def test_a_tag_reads_back_even_from_a_send_id_with_dots() -> None:
    tag = Tag("my.app.send-7", 3, 12, 4)
    assert parse_tag({TAG_KEY: str(tag), "other": "x"}) == tag


def test_anything_else_is_no_tag() -> None:
    for variables in (None, {}, {TAG_KEY: 5}, {TAG_KEY: "s.1.2"}, {TAG_KEY: ".1.2.3"}, "x"):
        assert parse_tag(variables) is None
