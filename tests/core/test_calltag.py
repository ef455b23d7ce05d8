"""The worker's tag on each request: added on the wire, never at the cost of acceptance."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailqueue import Settings, build_payload
from mailqueue.core import calltag
from mailqueue.core.calltag import TAG_KEY, Tag, parse_tag, tag_call
from mailqueue.core.message import custom_variables_size
from mailqueue.core.payload import ApiCall, coalesce

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


@pytest.mark.parametrize("shared", [True, False])
def test_variables_of_exactly_the_limit_with_the_tag_are_tagged_one_byte_more_are_not(
    shared: bool,
) -> None:
    tag = Tag("sé", 0, 0, 0)
    room = 1000 - custom_variables_size({"k": "", "é": "", TAG_KEY: str(tag)})
    for extra, fits in ((0, True), (1, False)):
        variables = {"k": "x" * (room - 2 + extra), "é": "é"}  # é: two bytes
        assert custom_variables_size({**variables, TAG_KEY: str(tag)}) == 1000 + extra
        base: dict[str, Any] = {"subject": "Hi"}
        request: dict[str, Any] = {"to": [{"email": "a@example.com"}]}
        (base if shared else request)["custom_variables"] = variables
        call = ApiCall("batch", {"base": base, "requests": [request]}, (("a@example.com",),))
        assert tag_call(call, [tag])[1] == [fits]


def measured_one_by_one(
    call: ApiCall, tags: list[Tag], max_message: int, max_batch: int
) -> tuple[dict[str, Any], list[bool]]:
    """What tagging a batch call means, spelled out: every request measured whole, then the call."""
    base = call.json.get("base") or {}
    requests: list[Any] = []
    which: list[bool] = []
    for request, tag in zip(call.json["requests"], tags, strict=True):
        current = request.get("custom_variables", base.get("custom_variables")) or {}
        variables = {**current, TAG_KEY: str(tag)}
        new = {**request, "custom_variables": variables}
        fits = (
            TAG_KEY not in current
            and custom_variables_size(variables) <= 1000
            and len(json.dumps(base)) + len(json.dumps(new)) <= max_message
        )
        requests.append(new if fits else request)
        which.append(fits)
    body = {**call.json, "requests": requests}
    if len(json.dumps(body)) > max_batch:
        return call.json, [False] * len(tags)
    return body, which


variables_strategy = st.dictionaries(
    st.text(max_size=8), st.text(max_size=300) | st.integers(), max_size=4
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base_variables=st.none() | variables_strategy,
    requests=st.lists(
        st.tuples(st.none() | variables_strategy, st.text(max_size=1500)), min_size=1, max_size=12
    ),
    send_id=st.text(min_size=1, max_size=12),
    max_message=st.integers(min_value=500, max_value=20_000),
    max_batch=st.integers(min_value=1_000, max_value=60_000),
)
def test_a_batch_call_is_tagged_as_measuring_each_request_whole_would_tag_it(
    base_variables: dict[str, Any] | None,
    requests: list[tuple[dict[str, Any] | None, str]],
    send_id: str,
    max_message: int,
    max_batch: int,
) -> None:
    base: dict[str, Any] = {"from": {"email": "s@example.com"}, "subject": "Hi"}
    if base_variables is not None:
        base["custom_variables"] = base_variables
    bodies = []
    for i, (variables, text) in enumerate(requests):
        request: dict[str, Any] = {"to": [{"email": f"r{i}@example.com"}], "text": text}
        if variables is not None:
            request["custom_variables"] = variables
        bodies.append(request)
    call = ApiCall(
        "batch",
        {"base": base, "requests": bodies},
        tuple((f"r{i}@example.com",) for i in range(len(bodies))),
    )
    before = copy.deepcopy(call.json)
    tags = [Tag(send_id, 1, i, 0) for i in range(len(bodies))]
    # Small limits, so that the body's size decides for some calls and not for others.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calltag, "MAX_MESSAGE_BYTES", max_message)
        patch.setattr(calltag, "MAX_BATCH_BYTES", max_batch)
        tagged, which = tag_call(call, tags)
    assert (tagged.json, which) == measured_one_by_one(call, tags, max_message, max_batch)
    assert call.json == before
