"""Batch sends (merge_*), chunking to Mailtrap's limits, and coalescing single sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailqueue.core import payload as payload_module
from mailqueue.core.payload import ApiCall, build_payload, call_size, coalesce
from mailqueue.errors import ValidationError
from mailqueue.settings import Settings


def batch(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from_email": "from@example.com",
        "to": ["alice@example.com", "Bob <bob@example.com>", "cam@example.com"],
        "template_id": "b81aabcd-1a1e-41cf-91b6-eca0254b3d96",
        "merge_global_data": {"global": "G", "name": "Anonymous"},
        "merge_data": {
            "alice@example.com": {"name": "Alice", "group": "A"},
            "bob@example.com": {"name": "Bob"},
            "nobody@example.com": {"name": "Nobody"},
        },
    }
    message.update(changes)
    return message


def single(to: str, **changes: Any) -> ApiCall:
    message: dict[str, Any] = {
        "from_email": "from@example.com",
        "to": [to],
        "subject": "Subject",
        "text": "Body",
    }
    message.update(changes)
    [call] = build_payload(message)
    return call


def test_merge_data_sends_one_batch_request_per_to_with_merged_variables() -> None:
    [call] = build_payload(batch())
    assert call.path == "batch"
    assert call.is_batch
    assert call.json["base"] == {
        "from": {"email": "from@example.com"},
        "template_uuid": "b81aabcd-1a1e-41cf-91b6-eca0254b3d96",
        "template_variables": {"global": "G", "name": "Anonymous"},
    }
    assert call.json["requests"] == [
        {
            "to": [{"email": "alice@example.com"}],
            "template_variables": {"global": "G", "name": "Alice", "group": "A"},
        },
        {
            "to": [{"email": "bob@example.com", "name": "Bob"}],
            "template_variables": {"global": "G", "name": "Bob"},
        },
        {"to": [{"email": "cam@example.com"}]},
    ]
    assert call.recipients == (("alice@example.com",), ("bob@example.com",), ("cam@example.com",))


def test_empty_merge_data_still_makes_a_batch_send() -> None:
    [call] = build_payload(batch(merge_data={}))
    assert call.path == "batch"
    assert call.json["requests"] == [
        {"to": [{"email": "alice@example.com"}]},
        {"to": [{"email": "bob@example.com", "name": "Bob"}]},
        {"to": [{"email": "cam@example.com"}]},
    ]


def test_merge_metadata_is_stringified_like_metadata_and_merged_over_it() -> None:
    message = batch(
        metadata={"campaign": 7},
        merge_data=None,
        merge_metadata={"alice@example.com": {"user": 123, "vip": True, "none": None}},
    )
    [call] = build_payload(message)
    assert call.json["base"]["custom_variables"] == {"campaign": "7"}
    assert call.json["requests"][0]["custom_variables"] == {
        "campaign": "7",
        "user": "123",
        "vip": "True",
        "none": "None",
    }
    assert "custom_variables" not in call.json["requests"][1]


def test_merge_header_numbers_become_strings() -> None:
    message = batch(merge_data=None, merge_headers={"bob@example.com": {"X-Priority": 1}})
    [call] = build_payload(message)
    assert call.json["requests"][1]["headers"] == {"X-Priority": "1"}


def test_merge_headers_are_merged_case_sensitively_over_headers() -> None:
    message = batch(
        headers={"X-Tag": "base"},
        merge_data=None,
        merge_headers={"bob@example.com": {"x-tag": "bob", "X-Other": "o"}},
    )
    [call] = build_payload(message)
    assert call.json["base"]["headers"] == {"X-Tag": "base"}
    assert "headers" not in call.json["requests"][0]
    assert call.json["requests"][1]["headers"] == {"X-Tag": "base", "x-tag": "bob", "X-Other": "o"}


def test_every_request_carries_the_full_cc_and_bcc_lists() -> None:
    message = {
        "from_email": "from@example.com",
        "to": ["alice@example.com", "Bob <bob@example.com>"],
        "cc": ["cc0@example.com", "Also CC <cc1@example.com>"],
        "bcc": ["bcc0@example.com"],
        "subject": "Subject",
        "text": "Body",
        "merge_data": {},
    }
    [call] = build_payload(message)
    cc = [{"email": "cc0@example.com"}, {"email": "cc1@example.com", "name": "Also CC"}]
    bcc = [{"email": "bcc0@example.com"}]
    assert call.json == {
        "base": {"from": {"email": "from@example.com"}, "subject": "Subject", "text": "Body"},
        "requests": [
            {"to": [{"email": "alice@example.com"}], "cc": cc, "bcc": bcc},
            {"to": [{"email": "bob@example.com", "name": "Bob"}], "cc": cc, "bcc": bcc},
        ],
    }
    copies = ("cc0@example.com", "cc1@example.com", "bcc0@example.com")
    assert call.recipients == (("alice@example.com", *copies), ("bob@example.com", *copies))


@pytest.mark.parametrize("key", ["user@příklad.example.cz", "user@xn--pklad-zsa96e.example.cz"])
def test_merge_keys_match_either_the_unicode_or_the_idna_form(key: str) -> None:
    message = batch(to=["user@příklad.example.cz"], merge_data={key: {"name": "U"}})
    [call] = build_payload(message)
    assert call.json["requests"][0]["template_variables"]["name"] == "U"
    assert call.recipients == (("user@příklad.example.cz",),)


def test_sandbox_batch_goes_to_batch_with_the_sandbox_id() -> None:
    [call] = build_payload(batch(), Settings(sandbox_id="12345"))
    assert call.path == "batch/12345"


def test_esp_extra_goes_into_base() -> None:
    [call] = build_payload(batch(esp_extra={"category_hint": "x"}))
    assert call.json["base"]["category_hint"] == "x"
    assert all("category_hint" not in request for request in call.json["requests"])


def test_batch_without_to_recipients_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as raised:
        build_payload(batch(to=None, cc=["cc@example.com"]))
    assert raised.value.field == "to"


def test_batch_is_chunked_at_500_requests() -> None:
    addresses = [f"user{i}@example.com" for i in range(1201)]
    calls = build_payload(batch(to=addresses, merge_data={}))
    assert [len(call.json["requests"]) for call in calls] == [500, 500, 201]
    assert [r[0] for call in calls for r in call.recipients] == addresses
    assert all(call.json["base"] == calls[0].json["base"] for call in calls)


def test_batch_to_is_not_limited_to_1000_but_cc_is() -> None:
    calls = build_payload(batch(to=[f"u{i}@example.com" for i in range(1001)]))
    assert sum(len(call.recipients) for call in calls) == 1001
    with pytest.raises(ValidationError) as raised:
        build_payload(batch(cc=[f"c{i}@example.com" for i in range(1001)]))
    assert raised.value.field == "cc"


def test_batch_chunks_are_split_further_to_stay_under_the_size_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payload_module, "MAX_BATCH_BYTES", 2000)
    addresses = [f"user{i}@example.com" for i in range(60)]
    calls = build_payload(batch(to=addresses, merge_data={}))
    assert len(calls) > 1
    assert all(call_size(call) <= 2000 for call in calls)
    assert [r[0] for call in calls for r in call.recipients] == addresses


def test_merged_metadata_over_1000_bytes_is_a_validation_error() -> None:
    message = batch(merge_data=None, merge_metadata={"bob@example.com": {"blob": "x" * 1000}})
    with pytest.raises(ValidationError) as raised:
        build_payload(message)
    assert raised.value.field == "merge_metadata"


def test_large_merge_data_batch_builds_quickly() -> None:
    count = 20_000
    addresses = [f"user{i}@example.com" for i in range(count)]
    message = batch(to=addresses, merge_data={a: {"n": i} for i, a in enumerate(addresses)})
    calls = build_payload(message)
    assert sum(len(call.json["requests"]) for call in calls) == count
    assert calls[-1].json["requests"][-1]["template_variables"]["n"] == count - 1


# -- coalesce -------------------------------------------------------------


def test_coalesce_delivers_each_single_send_as_one_request() -> None:
    first = single("a@example.com", subject="One", cc=["cc@example.com"])
    second = single("b@example.com", subject="Two")
    call = coalesce([first, second])
    assert call.path == "batch"
    assert call.json["base"] == {"from": {"email": "from@example.com"}, "text": "Body"}
    assert call.json["requests"] == [
        {"to": [{"email": "a@example.com"}], "cc": [{"email": "cc@example.com"}], "subject": "One"},
        {"to": [{"email": "b@example.com"}], "subject": "Two"},
    ]
    assert call.recipients == (("a@example.com", "cc@example.com"), ("b@example.com",))


def test_coalesce_never_puts_recipients_in_base() -> None:
    call = coalesce([single("a@example.com"), single("a@example.com")])
    assert "to" not in call.json["base"]
    assert all(request["to"] == [{"email": "a@example.com"}] for request in call.json["requests"])


def test_coalesce_keeps_a_key_out_of_base_when_one_call_lacks_it() -> None:
    call = coalesce([single("a@example.com", tags=["t"]), single("b@example.com")])
    assert "category" not in call.json["base"]
    assert call.json["requests"][0]["category"] == "t"
    assert "category" not in call.json["requests"][1]


def test_coalesce_treats_true_and_one_as_different_values() -> None:
    call = coalesce(
        [
            single("a@example.com", merge_global_data={"n": 1}),
            single("b@example.com", merge_global_data={"n": True}),
        ]
    )
    assert "template_variables" not in call.json["base"]
    assert [r["template_variables"] for r in call.json["requests"]] == [{"n": 1}, {"n": True}]


def test_coalesce_uses_the_sandbox_batch_endpoint() -> None:
    settings = Settings(sandbox_id="7")
    call = coalesce([single("a@example.com")], settings)
    assert call.path == "batch/7"


def test_coalesced_request_equals_the_single_send_when_merged_over_base() -> None:
    calls = [
        single("a@example.com", subject="One", headers={"X-A": "1"}),
        single("b@example.com", subject="One", metadata={"k": "v"}),
        single("c@example.com", subject="Three", html="<p>x</p>"),
    ]
    combined = coalesce(calls)
    for original, request in zip(calls, combined.json["requests"], strict=True):
        assert {**combined.json["base"], **request} == original.json


def test_coalesce_refuses_batch_calls() -> None:
    [batch_call] = build_payload(batch())
    with pytest.raises(ValueError):
        coalesce([batch_call])


def test_coalesced_call_round_trips_through_json() -> None:
    call = coalesce([single("a@example.com"), single("b@example.com")])
    assert ApiCall.from_dict(json.loads(json.dumps(call.to_dict()))) == call
