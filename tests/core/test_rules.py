"""Mailtrap's published request rules, as wire-level checks of a body (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.core.rules import (
    MAX_BATCH_REQUESTS,
    MAX_CATEGORY_CHARS,
    MAX_CUSTOM_VARIABLES_BYTES,
    MAX_SANDBOX_ID,
    RuleError,
    batch_envelope_errors,
    custom_variables_size,
    field_errors,
    is_sandbox_id,
    is_template_uuid,
    merge_request,
    message_errors,
)

UUID = "3a2b1c4d-0000-4e5f-8a9b-0c1d2e3f4a5b"


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from": {"email": "shop@example.com", "name": "Shop"},
        "to": [{"email": "a@example.com"}],
        "subject": "Hi",
        "text": "Hello",
    }
    return {key: value for key, value in (base | overrides).items() if value is not None}


def fields(errors: list[RuleError]) -> list[str]:
    return [error.field for error in errors]


def test_a_whole_message_has_no_errors() -> None:
    assert message_errors(body()) == []


def test_a_message_missing_everything_names_each_required_field() -> None:
    assert fields(message_errors({})) == ["from", "to", "subject", "text"]


def test_cc_or_bcc_alone_are_recipients_enough() -> None:
    assert message_errors(body(to=None, bcc=[{"email": "b@example.com"}])) == []


def test_html_alone_is_a_body() -> None:
    assert message_errors(body(text=None, html="<p>Hi</p>")) == []


def test_a_template_forbids_subject_text_html_and_category() -> None:
    errors = message_errors(body(template_uuid=UUID, html="x", category="c"))

    assert fields(errors) == ["subject", "text", "html", "category"]
    assert errors[0].message == "'subject' is not allowed with 'template_uuid'"


def test_a_template_needs_no_subject_nor_body() -> None:
    assert message_errors(body(template_uuid=UUID, subject=None, text=None)) == []


@pytest.mark.parametrize(
    ("sender", "allow_eai", "ok"),
    [
        ({"email": "no-at-sign"}, False, False),
        ({"email": "a@example.com", "name": 5}, False, False),
        ("a@example.com", False, False),
        ({"email": "ünï@example.com"}, False, False),
        ({"email": "ünï@example.com"}, True, True),
    ],
)
def test_the_sender_must_be_an_address_and_ascii_unless_allowed(
    sender: object, allow_eai: bool, ok: bool
) -> None:
    errors = field_errors({"from": sender}, allow_eai_from=allow_eai)

    assert (errors == []) is ok
    assert all(error.field == "from" for error in errors)


def test_recipient_lists_must_be_arrays_of_addresses_each_named_by_index() -> None:
    errors = field_errors({"to": "a@example.com", "cc": [{"email": "ok@x.io"}, {"email": "bad"}]})

    assert [(e.field, e.message) for e in errors] == [
        ("to", "'to' must be an array"),
        ("cc[1]", "'cc' address is invalid"),
    ]


def test_more_than_a_thousand_addresses_in_one_field_is_refused() -> None:
    many = [{"email": f"r{i}@example.com"} for i in range(1001)]

    assert fields(field_errors({"bcc": many})) == ["bcc"]


@pytest.mark.parametrize("name", ["subject", "text", "html"])
def test_subject_and_bodies_must_be_non_empty_strings(name: str) -> None:
    assert fields(field_errors({name: ""})) == [name]
    assert fields(field_errors({name: 5})) == [name]


def test_reply_to_must_be_an_address() -> None:
    assert fields(field_errors({"reply_to": {"email": "nope"}})) == ["reply_to"]


def test_template_uuid_and_template_variables_are_typed() -> None:
    errors = field_errors({"template_uuid": "not-a-uuid", "template_variables": []})

    assert fields(errors) == ["template_uuid", "template_variables"]


def test_a_category_is_a_string_of_at_most_255_characters() -> None:
    assert field_errors({"category": "c" * MAX_CATEGORY_CHARS}) == []
    assert fields(field_errors({"category": "c" * (MAX_CATEGORY_CHARS + 1)})) == ["category"]
    assert fields(field_errors({"category": ["c"]})) == ["category"]


def test_custom_variables_are_strings_within_1000_bytes_of_compact_json() -> None:
    assert fields(field_errors({"custom_variables": {"n": 1}})) == ["custom_variables.n"]
    # {"k":"..."} is 8 bytes of JSON around the value.
    fits = {"k": "x" * (MAX_CUSTOM_VARIABLES_BYTES - 8)}
    assert custom_variables_size(fits) == MAX_CUSTOM_VARIABLES_BYTES
    assert field_errors({"custom_variables": fits}) == []
    over = {"k": "x" * (MAX_CUSTOM_VARIABLES_BYTES - 7)}
    assert fields(field_errors({"custom_variables": over})) == ["custom_variables"]


def test_custom_variables_are_measured_in_utf8_bytes_and_survive_a_lone_surrogate() -> None:
    assert custom_variables_size({"k": "é"}) == len('{"k":"é"}'.encode())
    assert custom_variables_size({"k": "\udc00"}) > 0


def test_reserved_headers_are_refused_in_any_case_and_others_kept() -> None:
    errors = field_errors({"headers": {"Subject": "x", "X-Tag": "ok", "X-Count": 1}})

    assert fields(errors) == ["headers.X-Count", "headers.Subject"]


def test_a_non_ascii_header_name_is_never_taken_for_a_reserved_one() -> None:
    # U+212A KELVIN SIGN lower-cases to an ASCII "k".
    assert field_errors({"headers": {"\u212aey": "x"}}) == []


def test_attachments_name_each_missing_or_mistyped_field() -> None:
    attachments = [
        {"content": "eA==", "filename": "a.txt"},
        "not an object",
        {"content": "", "type": "", "content_id": 3, "disposition": "sideways"},
    ]

    errors = field_errors({"attachments": attachments})

    assert fields(errors) == [
        "attachments[1]",
        "attachments[2].filename",
        "attachments[2].content",
        "attachments[2].type",
        "attachments[2].content_id",
        "attachments[2].disposition",
    ]
    assert fields(field_errors({"attachments": {}})) == ["attachments"]


def test_a_batch_needs_requests_and_checks_each_field_base_sets() -> None:
    errors = batch_envelope_errors({"base": {"subject": ""}, "requests": []})

    assert [(e.field, e.message) for e in errors] == [
        ("base.subject", "'subject' must be a non-empty string"),
        ("requests", "empty field: 'requests'"),
    ]


def test_a_batch_refuses_a_base_that_is_no_object_and_requests_that_are_not_objects() -> None:
    errors = batch_envelope_errors({"base": [], "requests": ["x"]})

    assert fields(errors) == ["base", "requests"]


def test_a_batch_of_more_than_500_requests_is_refused() -> None:
    requests = [{"to": [{"email": "a@example.com"}]}] * (MAX_BATCH_REQUESTS + 1)

    assert fields(batch_envelope_errors({"requests": requests})) == ["requests"]
    assert batch_envelope_errors({"requests": requests[:MAX_BATCH_REQUESTS]}) == []


def test_a_request_replaces_what_base_sets() -> None:
    merged = merge_request({"subject": "Base", "text": "t"}, {"subject": "Own"})

    assert merged == {"subject": "Own", "text": "t"}


def test_template_uuids_take_the_8_4_4_4_12_hex_form_only() -> None:
    assert is_template_uuid(UUID) and is_template_uuid(UUID.upper())
    assert not is_template_uuid(UUID.replace("-", ""))
    assert not is_template_uuid(None)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1", True),
        ("007", True),
        (str(MAX_SANDBOX_ID), True),
        (str(MAX_SANDBOX_ID + 1), False),
        ("0", False),
        ("", False),
        ("-1", False),
        ("١٢", False),  # Arabic-Indic digits: isdigit() but not ASCII
        ("9" * 5000, False),
    ],
)
def test_a_sandbox_id_is_an_int64_from_one(text: str, ok: bool) -> None:
    assert is_sandbox_id(text) is ok
