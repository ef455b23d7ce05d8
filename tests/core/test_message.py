"""Malformed messages raise ValidationError naming the offending field."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from mailqueue.core.payload import build_payload
from mailqueue.errors import UnsupportedFeature, ValidationError
from mailqueue.settings import Settings

GOOD: dict[str, Any] = {
    "from_email": "from@example.com",
    "to": ["to@example.com"],
    "subject": "Subject",
    "text": "Body",
}
TEMPLATE: dict[str, Any] = {
    "from_email": "from@example.com",
    "to": ["to@example.com"],
    "template_id": "b81aabcd-1a1e-41cf-91b6-eca0254b3d96",
}
BATCH: dict[str, Any] = {**GOOD, "merge_data": {}}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    message = dict(base)
    for key, value in changes.items():
        if value is _DELETE:
            message.pop(key, None)
        else:
            message[key] = value
    return message


_DELETE = object()

BAD_MESSAGES = [
    # (description, message, expected field)
    ("unknown key", with_(GOOD, attachment=[]), "attachment"),
    ("missing from", with_(GOOD, from_email=_DELETE), "from_email"),
    ("unparsable from", with_(GOOD, from_email="not an address"), "from_email"),
    ("from not a string", with_(GOOD, from_email=["a@example.com"]), "from_email"),
    ("to a bare string", with_(GOOD, to="to@example.com"), "to"),
    ("to item not a string", with_(GOOD, to=["a@example.com", 5]), "to[1]"),
    ("third to invalid", with_(GOOD, to=["a@x.com", "b@x.com", "bad-address"]), "to[2]"),
    ("unquoted comma", with_(GOOD, to=["Last, First <lf@x.com>"]), "to[0]"),
    ("empty address", with_(GOOD, to=[""]), "to[0]"),
    ("missing domain", with_(GOOD, cc=["user@"]), "cc[0]"),
    ("bad idna domain", with_(GOOD, bcc=["user@☃☃.example"]), "bcc[0]"),
    ("no recipients", with_(GOOD, to=[]), "to"),
    ("reply_to a bare string", with_(GOOD, reply_to="r@example.com"), "reply_to"),
    ("reply_to invalid", with_(GOOD, reply_to=["ok@x.com", "@x"]), "reply_to[1]"),
    ("subject not a string", with_(GOOD, subject=5), "subject"),
    ("text not a string", with_(GOOD, text=b"bytes"), "text"),
    ("no body", with_(GOOD, text=_DELETE), "text"),
    ("headers not a dict", with_(GOOD, headers=[("X-A", "1")]), "headers"),
    ("header value a list", with_(GOOD, headers={"X-Foo": ["a"]}), "headers.X-Foo"),
    ("header value Decimal", with_(GOOD, headers={"X-Foo": Decimal("1.5")}), "headers.X-Foo"),
    ("header value newline", with_(GOOD, headers={"X-Foo": "a\r\nBcc: x"}), "headers.X-Foo"),
    ("header name with colon", with_(GOOD, headers={"X:Foo": "a"}), "headers.X:Foo"),
    ("reply-to header invalid", with_(GOOD, headers={"Reply-To": "nope"}), "headers.Reply-To"),
    ("attachments not a list", with_(GOOD, attachments={"content": ""}), "attachments"),
    ("attachment not a dict", with_(GOOD, attachments=["abc"]), "attachments[0]"),
    (
        "attachment not base64",
        with_(GOOD, attachments=[{"content": ""}, {"content": "not base64!"}]),
        "attachments[1].content",
    ),
    ("attachment bytes", with_(GOOD, attachments=[{"content": b"x"}]), "attachments[0].content"),
    (
        "attachment no content",
        with_(GOOD, attachments=[{"filename": "a"}]),
        "attachments[0].content",
    ),
    (
        "attachment unknown key",
        with_(GOOD, attachments=[{"content": "", "size": 1}]),
        "attachments[0].size",
    ),
    (
        "attachment bad mimetype",
        with_(GOOD, attachments=[{"content": "", "mimetype": "png"}]),
        "attachments[0].mimetype",
    ),
    (
        "attachment inline not bool",
        with_(GOOD, attachments=[{"content": "", "inline": "yes"}]),
        "attachments[0].inline",
    ),
    ("tags a string", with_(GOOD, tags="one"), "tags"),
    ("tag not a string", with_(GOOD, tags=[1]), "tags[0]"),
    ("tag too long", with_(GOOD, tags=["x" * 256]), "tags[0]"),
    ("metadata not a dict", with_(GOOD, metadata=["a"]), "metadata"),
    ("metadata too large", with_(GOOD, metadata={"k": "v" * 1000}), "metadata"),
    ("template_id not a string", with_(TEMPLATE, template_id=5), "template_id"),
    ("subject with template", with_(TEMPLATE, subject="S"), "subject"),
    ("text with template", with_(TEMPLATE, text="T"), "text"),
    ("html with template", with_(TEMPLATE, html="<p>"), "html"),
    ("tag with template", with_(TEMPLATE, tags=["t"]), "tags"),
    ("no subject", with_(GOOD, subject=_DELETE), "subject"),
    ("empty subject", with_(GOOD, subject=""), "subject"),
    ("template_id not a UUID", with_(TEMPLATE, template_id="welcome"), "template_id"),
    ("template_id empty", with_(TEMPLATE, template_id=""), "template_id"),
    (
        "template_id braced",
        with_(TEMPLATE, template_id="{b81aabcd-1a1e-41cf-91b6-eca0254b3d96}"),
        "template_id",
    ),
    ("EAI from", with_(GOOD, from_email="José <josé@example.com>"), "from_email"),
    ("reserved header", with_(GOOD, headers={"X-A": "1", "subject": "S"}), "headers.subject"),
    ("reserved Cc header", with_(GOOD, headers={"Cc": "c@example.com"}), "headers.Cc"),
    (
        "reserved merge header",
        with_(GOOD, merge_headers={"to@example.com": {"To": "x@example.com"}}),
        "merge_headers.to@example.com.To",
    ),
    ("empty attachment", with_(GOOD, attachments=[{"content": ""}]), "attachments[0].content"),
    (
        "esp_extra header number",
        with_(GOOD, esp_extra={"headers": {"X-P": 1}}),
        "esp_extra.headers.X-P",
    ),
    (
        "esp_extra custom_variables number",
        with_(GOOD, esp_extra={"custom_variables": {"n": 1}}),
        "esp_extra.custom_variables.n",
    ),
    (
        "esp_extra category with template",
        with_(TEMPLATE, esp_extra={"category": "c"}),
        "esp_extra.category",
    ),
    ("merge_global_data not a dict", with_(GOOD, merge_global_data=[1]), "merge_global_data"),
    (
        "merge_global_data Decimal",
        with_(GOOD, merge_global_data={"p": Decimal(1)}),
        "merge_global_data.p",
    ),
    (
        "merge_global_data NaN",
        with_(GOOD, merge_global_data={"p": math.nan}),
        "merge_global_data.p",
    ),
    (
        "merge_global_data inf",
        with_(GOOD, merge_global_data={"p": [math.inf]}),
        "merge_global_data.p[0]",
    ),
    ("merge_global_data set", with_(GOOD, merge_global_data={"p": {1}}), "merge_global_data.p"),
    ("merge_global_data bytes", with_(GOOD, merge_global_data={"p": b"x"}), "merge_global_data.p"),
    ("merge_global_data int key", with_(GOOD, merge_global_data={1: "x"}), "merge_global_data.1"),
    ("merge_data not a dict", with_(GOOD, merge_data=[]), "merge_data"),
    (
        "merge_data entry not a dict",
        with_(GOOD, merge_data={"to@example.com": "x"}),
        "merge_data.to@example.com",
    ),
    (
        "merge_data nested non-JSON",
        with_(GOOD, merge_data={"to@example.com": {"a": {"b": object()}}}),
        "merge_data.to@example.com.a.b",
    ),
    (
        "merge_metadata entry not a dict",
        with_(GOOD, merge_metadata={"to@example.com": None}),
        "merge_metadata.to@example.com",
    ),
    (
        "merge_headers value not a string",
        with_(GOOD, merge_headers={"to@example.com": {"X-A": None}}),
        "merge_headers.to@example.com.X-A",
    ),
    ("esp_extra not a dict", with_(GOOD, esp_extra="x"), "esp_extra"),
    ("esp_extra sets to", with_(GOOD, esp_extra={"to": []}), "esp_extra.to"),
    ("batch without to", with_(BATCH, to=_DELETE, cc=["cc@example.com"]), "to"),
    ("too many to", with_(GOOD, to=[f"u{i}@example.com" for i in range(1001)]), "to"),
    ("too many bcc", with_(GOOD, bcc=[f"u{i}@example.com" for i in range(1001)]), "bcc"),
    ("message too large", with_(GOOD, text="x" * 10_000_001), "message"),
]


@pytest.mark.parametrize(
    ("message", "field"),
    [pytest.param(message, field, id=description) for description, message, field in BAD_MESSAGES],
)
def test_bad_message_raises_validation_error_naming_the_field(
    message: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        build_payload(message)
    assert raised.value.field == field
    assert raised.value.__cause__ is None  # caught by validation, not by the safety net


@pytest.mark.parametrize("message", [None, "text", ["list"], 5])
def test_a_message_that_is_not_a_dict_is_a_validation_error(message: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        build_payload(message)
    assert raised.value.field == "message"


def test_error_message_names_the_field_and_hints_at_missing_quotes() -> None:
    with pytest.raises(ValidationError, match=r"to\[0\].*maybe missing quotes"):
        build_payload(with_(GOOD, to=["Last, First <lf@x.com>"]))


def test_validation_error_is_not_an_unsupported_feature() -> None:
    with pytest.raises(ValidationError) as raised:
        build_payload(with_(GOOD, to=["bad-address"]))
    assert not isinstance(raised.value, UnsupportedFeature)


def test_none_means_absent() -> None:
    message = with_(GOOD, cc=None, bcc=None, reply_to=None, headers=None, tags=None, metadata=None)
    assert build_payload(message)[0].json == build_payload(GOOD)[0].json


def test_none_merge_data_is_not_a_batch_send() -> None:
    assert build_payload(with_(GOOD, merge_data=None))[0].path == "send"


def test_empty_template_fields_are_allowed_with_template_and_left_out() -> None:
    [call] = build_payload(with_(TEMPLATE, subject="", text="", html="", tags=[]))
    assert call.json == {
        "from": {"email": "from@example.com"},
        "to": [{"email": "to@example.com"}],
        "template_uuid": TEMPLATE["template_id"],
    }


def test_eai_from_is_allowed_by_its_setting() -> None:
    message = with_(GOOD, from_email="josé@example.com")
    [call] = build_payload(message, Settings(allow_eai_from=True))
    assert call.json["from"] == {"email": "josé@example.com"}


def test_eai_recipients_are_still_sent_as_anymail_sends_them() -> None:
    [call] = build_payload(with_(GOOD, to=["josé@example.com"]))
    assert call.json["to"] == [{"email": "josé@example.com"}]


def test_template_id_in_upper_case_hex_is_a_uuid() -> None:
    upper = TEMPLATE["template_id"].upper()
    [call] = build_payload(with_(TEMPLATE, template_id=upper))
    assert call.json["template_uuid"] == upper


def test_subject_may_come_from_esp_extra() -> None:
    [call] = build_payload(with_(GOOD, subject=_DELETE, esp_extra={"subject": "S"}))
    assert call.json["subject"] == "S"


def test_body_may_come_from_esp_extra() -> None:
    message = with_(GOOD, text=_DELETE, esp_extra={"html": "<p>x</p>"})
    assert build_payload(message)[0].json["html"] == "<p>x</p>"


def test_ignoring_unsupported_features_does_not_ignore_validation_errors() -> None:
    with pytest.raises(ValidationError) as raised:
        build_payload(with_(GOOD, to=["bad-address"]), Settings(ignore_unsupported_features=True))
    assert raised.value.field == "to[0]"


def test_deeply_nested_data_is_refused_not_crashing() -> None:
    nested: Any = "leaf"
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(ValidationError) as raised:
        build_payload(with_(GOOD, merge_global_data={"deep": nested}))
    assert raised.value.field is not None
    assert raised.value.field.startswith("merge_global_data.deep")


def test_deeply_nested_metadata_value_is_refused_not_crashing() -> None:
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ValidationError) as raised:
        build_payload(with_(GOOD, metadata={"deep": nested}))
    assert raised.value.field == "metadata.deep"


def test_huge_strings_are_handled() -> None:
    huge = "x" * 5_000_000
    [call] = build_payload(with_(GOOD, text=huge, subject=huge[:1000]))
    assert call.json["text"] is huge
