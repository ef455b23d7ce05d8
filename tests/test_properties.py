"""Property tests: any input builds or raises ValidationError; built calls are well-formed."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailqueue.core.message import MESSAGE_KEYS
from mailqueue.core.payload import MAX_BATCH_REQUESTS, ApiCall, build_payload, call_size, coalesce
from mailqueue.errors import ValidationError
from mailqueue.settings import Settings

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_like = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
non_json = (
    st.binary(max_size=8)
    | st.decimals(allow_nan=True)
    | st.sets(st.integers(), max_size=3)
    | st.just(object())
    | st.just(math.inf)
    | st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2)
    | st.tuples(st.integers())
    | st.builds(bytearray)
)
anything = st.recursive(
    json_scalars | non_json,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=3)
    ),
    max_leaves=8,
)

addresses = st.sampled_from(
    [
        "a@example.com",
        "Bob <bob@example.com>",
        '"Last, First" <lf@example.com>',
        "user@příklad.example.cz",
        "відправник@example.com",
        "x@ÜNICODE.example",
        "bad-address",
        "",
        "a@example.com, c@example.com",
    ]
)
address_lists = st.lists(addresses, max_size=4)
header_dicts = st.dictionaries(
    st.sampled_from(["X-A", "x-a", "Reply-To", "From", "To", "X-B"]),
    st.sampled_from(["v", "a@example.com", "", 5]),
    max_size=3,
)
attachment = st.fixed_dictionaries(
    {"content": st.sampled_from(["", "aGVsbG8=", "not base64!"])},
    optional={
        "filename": st.sampled_from(["a.txt", "b.png", "", "émoticône.img"]),
        "mimetype": st.sampled_from(["text/plain", "image/png", "bogus"]),
        "inline": st.booleans(),
        "content_id": st.sampled_from(["<cid@x>", "cid", ""]),
    },
)
merge_keys = st.sampled_from(["a@example.com", "bob@example.com", "user@příklad.example.cz"])
plausible_message = st.fixed_dictionaries(
    {},
    optional={
        "from_email": addresses,
        "to": address_lists,
        "cc": address_lists,
        "bcc": address_lists,
        "reply_to": address_lists,
        "subject": st.text(max_size=10),
        "text": st.text(max_size=10),
        "html": st.text(max_size=10),
        "attachments": st.lists(attachment, max_size=2),
        "headers": header_dicts,
        "tags": st.lists(st.text(max_size=5), max_size=2),
        "metadata": st.dictionaries(st.text(max_size=5), json_like, max_size=3),
        "template_id": st.text(max_size=5),
        "merge_global_data": st.dictionaries(st.text(max_size=5), json_like, max_size=3),
        "merge_data": st.dictionaries(merge_keys, st.dictionaries(st.text(max_size=3), json_like)),
        "merge_metadata": st.dictionaries(
            merge_keys, st.dictionaries(st.text(max_size=3), json_like)
        ),
        "merge_headers": st.dictionaries(merge_keys, header_dicts),
        "esp_extra": st.dictionaries(st.sampled_from(["subject", "extra", "headers"]), json_like),
        "send_at": json_like,
        "track_opens": st.booleans(),
    },
)
arbitrary_message = st.dictionaries(
    st.sampled_from(sorted(MESSAGE_KEYS)) | st.text(max_size=5), anything, max_size=6
)
settings_choices = st.sampled_from(
    [
        Settings(),
        Settings(ignore_unsupported_features=True),
        Settings(sandbox_id="1234", default_from_email="default@example.com"),
    ]
)


def build_or_reject(message: Any, config: Settings) -> list[ApiCall] | None:
    try:
        return build_payload(message, config)
    except ValidationError as error:
        assert error.field, "a ValidationError must name a field"
        assert error.__cause__ is None, f"only the safety net caught {error.__cause__!r}"
        return None


def assert_well_formed(calls: list[ApiCall]) -> None:
    assert calls
    for call in calls:
        text = json.dumps(call.json, allow_nan=False)
        assert call_size(call) == len(text)
        if call.is_batch:
            assert len(call.json["requests"]) == len(call.recipients) <= MAX_BATCH_REQUESTS
            for request, group in zip(call.json["requests"], call.recipients, strict=True):
                count = sum(len(request.get(key, [])) for key in ("to", "cc", "bcc"))
                assert count == len(group)
        else:
            [group] = call.recipients
            assert sum(len(call.json.get(key, [])) for key in ("to", "cc", "bcc")) == len(group)
        assert ApiCall.from_dict(json.loads(json.dumps(call.to_dict()))) == call


@PROPERTY_SETTINGS
@given(message=plausible_message, config=settings_choices)
def test_plausible_messages_build_well_formed_calls_or_raise_validation_error(
    message: dict[str, Any], config: Settings
) -> None:
    calls = build_or_reject(message, config)
    if calls is not None:
        assert_well_formed(calls)


@PROPERTY_SETTINGS
@given(message=arbitrary_message, config=settings_choices)
def test_arbitrary_input_raises_only_validation_error(message: Any, config: Settings) -> None:
    calls = build_or_reject(message, config)
    if calls is not None:
        assert_well_formed(calls)


@PROPERTY_SETTINGS
@given(value=anything | json_like)
def test_any_value_in_place_of_a_message_raises_only_validation_error(value: Any) -> None:
    build_or_reject(value, Settings())


@PROPERTY_SETTINGS
@given(key=st.sampled_from(sorted(MESSAGE_KEYS)), value=anything)
def test_any_value_for_any_key_raises_only_validation_error(key: str, value: Any) -> None:
    message = {"from_email": "f@example.com", "to": ["t@example.com"], "text": "x", key: value}
    calls = build_or_reject(message, Settings())
    if calls is not None:
        assert_well_formed(calls)


@PROPERTY_SETTINGS
@given(messages=st.lists(plausible_message, min_size=1, max_size=5))
def test_coalesced_requests_merged_over_base_equal_the_single_sends(
    messages: list[dict[str, Any]],
) -> None:
    singles = []
    for message in messages:
        message.pop("merge_data", None)
        message.pop("merge_metadata", None)
        message.pop("merge_headers", None)
        calls = build_or_reject(message, Settings(ignore_unsupported_features=True))
        if calls is not None:
            singles.extend(calls)
    if not singles:
        return
    combined = coalesce(singles)
    base = combined.json["base"]
    assert combined.recipients == tuple(call.recipients[0] for call in singles)
    for single, request in zip(singles, combined.json["requests"], strict=True):
        assert not set(base) & set(request)
        assert json.dumps({**base, **request}, sort_keys=True) == json.dumps(
            single.json, sort_keys=True
        )


def test_decimal_is_refused_anywhere_json_is_needed() -> None:
    for key in ("merge_global_data", "esp_extra"):
        message = {"from_email": "f@x.com", "to": ["t@x.com"], "text": "x", key: {"d": Decimal(1)}}
        assert build_or_reject(message, Settings()) is None
