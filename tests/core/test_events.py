"""Normalizing Mailtrap tracking events and parsing webhook bodies (pure, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailqueue.core.events import normalize_event
from mailqueue.errors import ValidationError
from mailqueue.webhooks.body import parse_body


def raw_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "delivery",
        "message_id": "1df37d17-0286-4d8b-8edf-bc4ec5be86e6",
        "sending_stream": "transactional",
        "email": "receiver@example.com",
        "timestamp": 1498093527,
        "sending_domain_name": "example.com",
        "event_id": "bede7236-2284-43d6-a953-1fdcafd0fdbc",
        "category": "password-reset",
        "custom_variables": {"user_id": "123456", "flag": True},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


@pytest.mark.parametrize(
    ("mailtrap_name", "event_type", "reject_reason"),
    [
        ("delivery", "delivered", None),
        ("open", "opened", None),
        ("click", "clicked", None),
        ("bounce", "bounced", "bounced"),
        ("soft bounce", "deferred", "other"),
        ("soft_bounce", "deferred", "other"),
        ("suspension", "deferred", "other"),
        ("spam", "complained", "spam"),
        ("spam_complaint", "complained", "spam"),
        ("unsubscribe", "unsubscribed", "unsubscribed"),
        ("reject", "rejected", "blocked"),
    ],
)
def test_event_names_map_as_anymail_maps_them(
    mailtrap_name: str, event_type: str, reject_reason: str | None
) -> None:
    event = normalize_event(raw_event(event=mailtrap_name))
    assert (event.event_type, event.reject_reason) == (event_type, reject_reason)
    assert event.mailtrap_event == mailtrap_name


@pytest.mark.parametrize("name", ["inbound", "inbound_message", "something new", "Delivered"])
def test_unknown_and_inbound_events_are_unknown_not_errors(name: str) -> None:
    event = normalize_event(raw_event(event=name))
    assert event.event_type == "unknown"
    assert event.reject_reason is None


def test_unix_seconds_become_iso_8601_utc() -> None:
    assert normalize_event(raw_event(timestamp=1498093527)).timestamp == "2017-06-22T01:05:27Z"


def test_a_float_timestamp_keeps_its_fraction() -> None:
    event = normalize_event(raw_event(timestamp=1498093527.25))
    assert event.timestamp == "2017-06-22T01:05:27.250000Z"


def test_category_becomes_the_only_tag_and_custom_variables_the_metadata() -> None:
    event = normalize_event(raw_event())
    assert event.tags == ("password-reset",)
    assert event.metadata == {"user_id": "123456", "flag": True}


def test_missing_category_and_custom_variables_give_empty_tags_and_metadata() -> None:
    event = normalize_event(raw_event(category=None, custom_variables=None))
    assert event.tags == ()
    assert event.metadata == {}


def test_bounce_fields_are_kept() -> None:
    event = normalize_event(
        raw_event(
            event="bounce",
            response="5.1.1 The email account that you tried to reach does not exist",
            response_code=550,
            bounce_category="badrecipient",
        )
    )
    assert event.mta_response == "5.1.1 The email account that you tried to reach does not exist"
    assert event.response_code == 550
    assert event.bounce_category == "badrecipient"


def test_click_fields_are_kept() -> None:
    event = normalize_event(
        raw_event(event="click", url="https://example.com/a", user_agent="Mozilla/5.0")
    )
    assert (event.click_url, event.user_agent) == ("https://example.com/a", "Mozilla/5.0")


def test_reject_reason_text_is_kept_as_reason() -> None:
    event = normalize_event(
        raw_event(event="reject", reason="Recipient in suppression list. Reason: unsubscription")
    )
    assert event.reason == "Recipient in suppression list. Reason: unsubscription"
    assert event.reject_reason == "blocked"


def test_recipient_message_id_and_event_id_are_kept() -> None:
    event = normalize_event(raw_event())
    assert event.recipient == "receiver@example.com"
    assert event.message_id == "1df37d17-0286-4d8b-8edf-bc4ec5be86e6"
    assert event.event_id == "bede7236-2284-43d6-a953-1fdcafd0fdbc"


def test_optional_fields_of_the_wrong_type_are_dropped() -> None:
    event = normalize_event(raw_event(email=5, response_code="550", category=["a"]))
    assert (event.recipient, event.response_code, event.tags) == (None, None, ())


def test_to_json_is_json_serializable_and_complete() -> None:
    data = json.loads(json.dumps(normalize_event(raw_event()).to_json()))
    assert data["event_type"] == "delivered"
    assert data["mailtrap_event"] == "delivery"
    assert data["tags"] == ["password-reset"]
    assert data["timestamp"] == "2017-06-22T01:05:27Z"


@pytest.mark.parametrize("name", ["event", "message_id", "timestamp"])
def test_a_missing_required_field_is_named(name: str) -> None:
    raw = raw_event()
    del raw[name]
    with pytest.raises(ValidationError, match=f'missing "{name}"') as info:
        normalize_event(raw)
    assert info.value.field == name


@pytest.mark.parametrize("value", ["1498093527", True, None, float("nan"), 1e300, [1]])
def test_a_malformed_timestamp_is_a_validation_error(value: Any) -> None:
    raw = raw_event()
    raw["timestamp"] = value
    with pytest.raises(ValidationError) as info:
        normalize_event(raw)
    assert info.value.field == "timestamp"


def test_a_non_string_message_id_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match='"message_id" must be a non-empty string'):
        normalize_event(raw_event(message_id=12))


# -- bodies ------------------------------------------------------------------


def test_a_json_body_gives_its_events_in_order() -> None:
    body = json.dumps({"events": [raw_event(event="delivery"), raw_event(event="open")]})
    assert [e.event_type for e in parse_body(body.encode())] == ["delivered", "opened"]


def test_a_json_lines_body_gives_its_events_in_order() -> None:
    lines = [json.dumps(raw_event(event="click")), "", json.dumps(raw_event(event="bounce"))]
    body = ("\r\n".join(lines) + "\n").encode()
    assert [e.event_type for e in parse_body(body)] == ["clicked", "bounced"]


def test_a_json_lines_body_of_one_event_is_accepted() -> None:
    assert [e.event_type for e in parse_body(json.dumps(raw_event()).encode())] == ["delivered"]


def test_an_empty_object_has_no_events() -> None:
    assert parse_body(b"{}") == []


def test_an_error_in_a_json_body_names_the_event_index_and_field() -> None:
    events = [raw_event(), raw_event(), raw_event(), raw_event(message_id=None)]
    with pytest.raises(ValidationError, match=r'^events\[3\]: missing "message_id"$'):
        parse_body(json.dumps({"events": events}).encode())


def test_an_error_in_a_json_lines_body_names_the_line() -> None:
    body = f"{json.dumps(raw_event())}\n\n{json.dumps(raw_event(timestamp=None))}\n"
    with pytest.raises(ValidationError, match=r'^line 3: missing "timestamp"$'):
        parse_body(body.encode())


def test_a_line_that_is_not_json_is_named() -> None:
    body = f"{json.dumps(raw_event())}\n{{not json\n"
    with pytest.raises(ValidationError, match=r"^line 2: not valid JSON$"):
        parse_body(body.encode())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is empty"),
        (b"\xff\xfe{}", "body is not valid UTF-8"),
        (b"[]", "JSON Lines of event objects"),
        (b'{"events": {}}', '"events" must be a list'),
        (b'{"events": [1]}', r"events\[0\]: not an event object"),
        (b'{"events": [{"event": "delivery", "message_id": "m", "timestamp": NaN}]}', "line 1"),
    ],
)
def test_bodies_that_are_not_events_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_body(body)


def test_content_decides_the_format_not_a_leading_byte_order_mark() -> None:
    body = "\ufeff" + json.dumps({"events": [raw_event()]})
    assert len(parse_body(body.encode())) == 1


def test_a_non_finite_custom_variable_is_kept_as_text_so_the_event_stays_json() -> None:
    event = normalize_event(
        {
            "event": "delivery",
            "message_id": "a1b2c3",
            "timestamp": 1700000000,
            "custom_variables": {"score": float("inf"), "nested": [{"x": float("nan")}]},
        }
    )
    assert event.metadata == {"score": "inf", "nested": [{"x": "nan"}]}
    json.dumps(event.to_json(), allow_nan=False)
