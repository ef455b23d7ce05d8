"""Single-send payloads: the Mailtrap JSON that build_payload produces (Anymail's rules)."""

from __future__ import annotations

import json
from base64 import b64encode
from datetime import datetime, timezone
from typing import Any

import pytest

from mailqueue.core.payload import ApiCall, build_payload, call_size
from mailqueue.errors import UnsupportedFeature, ValidationError
from mailqueue.settings import Settings

IGNORE = Settings(ignore_unsupported_features=True)


def simple(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from_email": "from@example.com",
        "to": ["to@example.com"],
        "subject": "Subject",
        "text": "Body",
    }
    message.update(changes)
    return message


def body(message: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    calls = build_payload(message, settings)
    assert len(calls) == 1
    return calls[0].json


def b64(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def test_simple_send_posts_to_send_with_only_from_to_subject_text() -> None:
    [call] = build_payload(simple())
    assert call.path == "send"
    assert call.json == {
        "from": {"email": "from@example.com"},
        "to": [{"email": "to@example.com"}],
        "subject": "Subject",
        "text": "Body",
    }


def test_display_names_appear_only_when_present() -> None:
    data = body(
        simple(
            from_email="From Name <from@example.com>",
            to=["to@example.com", "To Name <to2@example.com>"],
            cc=["CC Name <cc@example.com>"],
            bcc=["bcc@example.com"],
        )
    )
    assert data["from"] == {"email": "from@example.com", "name": "From Name"}
    assert data["to"] == [
        {"email": "to@example.com"},
        {"email": "to2@example.com", "name": "To Name"},
    ]
    assert data["cc"] == [{"email": "cc@example.com", "name": "CC Name"}]
    assert data["bcc"] == [{"email": "bcc@example.com"}]


def test_one_string_may_hold_several_addresses() -> None:
    data = body(simple(to=["a@example.com, B <b@example.com>"]))
    assert data["to"] == [{"email": "a@example.com"}, {"email": "b@example.com", "name": "B"}]


def test_html_is_sent_and_no_attachments_key() -> None:
    data = body(simple(html="<p>Hi</p>"))
    assert data["html"] == "<p>Hi</p>"
    assert data["text"] == "Body"
    assert "attachments" not in data


def test_html_only_message_has_no_text() -> None:
    data = body(simple(text=None, html="<p>Hi</p>"))
    assert "text" not in data


def test_empty_html_is_left_out_when_text_is_present() -> None:
    assert "html" not in body(simple(html=""))


def test_empty_text_is_left_out_when_html_is_present() -> None:
    assert "text" not in body(simple(text="", html="<p>x</p>"))


def test_empty_subject_is_dropped_with_a_template() -> None:
    message = simple(subject="", text=None, template_id="b81aabcd-1a1e-41cf-91b6-eca0254b3d96")
    assert "subject" not in body(message)


def test_extra_headers_keep_case_and_numbers_become_strings() -> None:
    data = body(simple(headers={"X-Custom": "value", "x-number": 5, "X-Ratio": 0.5}))
    assert data["headers"] == {"X-Custom": "value", "x-number": "5", "X-Ratio": "0.5"}


def test_header_names_are_deduplicated_case_insensitively_last_wins() -> None:
    data = body(simple(headers={"X-Tag": "first", "x-tag": "second"}))
    assert data["headers"] == {"x-tag": "second"}


def test_single_reply_to_with_comma_in_name_is_the_reply_to_object() -> None:
    data = body(simple(reply_to=['"Reply, Team" <reply@example.com>']))
    assert data["reply_to"] == {"email": "reply@example.com", "name": "Reply, Team"}
    assert "headers" not in data


def test_several_reply_to_become_an_encoded_header_and_other_headers_stay() -> None:
    data = body(
        simple(
            reply_to=[
                "reply@example.com",
                '"Other, with comma" <reply2@example.com>',
                "Інше <reply3@příklad.example.cz>",
            ],
            headers={"X-Other": "Keep"},
        )
    )
    assert data["headers"] == {
        "Reply-To": 'reply@example.com, "Other, with comma" <reply2@example.com>,'
        " =?utf-8?b?0IbQvdGI0LU=?= <reply3@xn--pklad-zsa96e.example.cz>",
        "X-Other": "Keep",
    }
    assert "reply_to" not in data


def test_eai_with_several_reply_to_is_unsupported() -> None:
    message = simple(reply_to=["відправник@example.com", "other@example.com"])
    with pytest.raises(UnsupportedFeature, match="EAI with multiple reply_to addresses"):
        build_payload(message)


def test_eai_with_several_reply_to_builds_the_header_anyway_when_ignoring() -> None:
    message = simple(reply_to=["відправник@example.com", "other@example.com"])
    data = body(message, IGNORE)
    assert data["headers"]["Reply-To"] == "відправник@example.com, other@example.com"


def test_reply_to_header_overrides_reply_to() -> None:
    data = body(simple(reply_to=["a@example.com"], headers={"reply-to": "B <b@example.com>"}))
    assert data["reply_to"] == {"email": "b@example.com", "name": "B"}
    assert "headers" not in data


def test_single_reply_to_header_after_several_reply_to_keeps_both() -> None:
    data = body(
        simple(reply_to=["a@example.com", "b@example.com"], headers={"Reply-To": "c@example.com"})
    )
    assert data["headers"] == {"Reply-To": "a@example.com, b@example.com"}
    assert data["reply_to"] == {"email": "c@example.com"}


def test_non_ascii_from_to_and_reply_to_encode_only_the_domain() -> None:
    data = body(
        simple(
            from_email='"Odesílatel, z adresy" <відправник@příklad.example.cz>',
            to=["Příjemce <příjemce@příklad.example.cz>"],
            reply_to=["Odpověď <odpověď@příklad.example.cz>"],
            subject="Předmět",
            headers={"X-Unicode": "Ünicode"},
        ),
        Settings(allow_eai_from=True),
    )
    assert data["from"] == {
        "name": "Odesílatel, z adresy",
        "email": "відправник@xn--pklad-zsa96e.example.cz",
    }
    assert data["to"] == [{"name": "Příjemce", "email": "příjemce@xn--pklad-zsa96e.example.cz"}]
    assert data["reply_to"] == {"name": "Odpověď", "email": "odpověď@xn--pklad-zsa96e.example.cz"}
    assert data["subject"] == "Předmět"
    assert data["headers"] == {"X-Unicode": "Ünicode"}


def test_idn_status_keys_keep_the_unicode_domain() -> None:
    [call] = build_payload(simple(to=["user@ÜNICODE.example"]))
    assert call.json["to"] == [{"email": "user@xn--nicode-2ya.example"}]
    assert call.recipients == (("user@ÜNICODE.example",),)


def test_ascii_domain_case_is_kept() -> None:
    assert body(simple(to=["User@Example.COM"]))["to"] == [{"email": "User@Example.COM"}]


def test_attachment_without_name_gets_fallback_filename_and_text_charset() -> None:
    data = body(simple(attachments=[{"content": b64(b"hello"), "mimetype": "text/plain"}]))
    assert data["attachments"] == [
        {"filename": "attachment", "type": 'text/plain; charset="utf-8"', "content": "aGVsbG8="}
    ]


def test_attachment_keeps_non_ascii_filename_and_given_type() -> None:
    attachment = {
        "filename": "émoticône.img",
        "content": b64(b";-)"),
        "mimetype": "image/x-emoticon",
    }
    data = body(simple(attachments=[attachment]))
    assert data["attachments"] == [
        {"filename": "émoticône.img", "type": "image/x-emoticon", "content": "Oy0p"}
    ]


def test_attachment_type_is_guessed_from_filename_else_octet_stream() -> None:
    data = body(
        simple(
            attachments=[
                {"filename": "photo.png", "content": "AA=="},
                {"filename": "blob.unknownext", "content": "AA=="},
            ]
        )
    )
    assert [a["type"] for a in data["attachments"]] == ["image/png", "application/octet-stream"]


def test_inline_attachment_gets_disposition_and_cid_without_brackets() -> None:
    attachment = {
        "filename": "logo.png",
        "content": b64(b"\x89PNG"),
        "mimetype": "image/png",
        "inline": True,
        "content_id": "<logo@example>",
    }
    [wire] = body(simple(attachments=[attachment]))["attachments"]
    assert wire == {
        "filename": "logo.png",
        "type": "image/png",
        "content": b64(b"\x89PNG"),
        "disposition": "inline",
        "content_id": "logo@example",
    }


def test_inline_attachment_without_content_id_gets_empty_cid() -> None:
    [wire] = body(simple(attachments=[{"content": "AA==", "inline": True}]))["attachments"]
    assert wire["disposition"] == "inline"
    assert wire["content_id"] == ""


def test_content_id_without_inline_flag_means_inline() -> None:
    [wire] = body(simple(attachments=[{"content": "AA==", "content_id": "x"}]))["attachments"]
    assert wire["disposition"] == "inline"


def test_non_inline_attachment_has_no_disposition_or_content_id() -> None:
    [wire] = body(simple(attachments=[{"filename": "a.bin", "content": "AA=="}]))["attachments"]
    assert "disposition" not in wire
    assert "content_id" not in wire


def test_attachment_content_is_sent_as_canonical_base64() -> None:
    [wire] = body(simple(attachments=[{"filename": "a.bin", "content": "aGVs\nbG8="}]))[
        "attachments"
    ]
    assert wire["content"] == "aGVsbG8="


def test_metadata_keys_and_values_are_stringified() -> None:
    data = body(simple(metadata={"user_id": 6, "flag": True, "none": None, "nested": {"x": 1}}))
    assert data["custom_variables"] == {
        "user_id": "6",
        "flag": "True",
        "none": "None",
        "nested": "{'x': 1}",
    }


def test_single_tag_becomes_category() -> None:
    assert body(simple(tags=["receipt"]))["category"] == "receipt"


def test_empty_tags_send_no_category() -> None:
    assert "category" not in body(simple(tags=[]))


def test_multiple_tags_are_unsupported() -> None:
    with pytest.raises(UnsupportedFeature, match="Mailtrap does not support multiple tags"):
        build_payload(simple(tags=["one", "two"]))


def test_multiple_tags_send_the_first_when_ignoring() -> None:
    assert body(simple(tags=["one", "two"]), IGNORE)["category"] == "one"


def test_template_without_merge_data_goes_to_send_without_subject_or_body() -> None:
    message = {
        "from_email": "from@example.com",
        "to": ["to@example.com"],
        "template_id": "b81aabcd-1a1e-41cf-91b6-eca0254b3d96",
        "merge_global_data": {"name": "Alice"},
    }
    [call] = build_payload(message)
    assert call.path == "send"
    assert call.json == {
        "from": {"email": "from@example.com"},
        "to": [{"email": "to@example.com"}],
        "template_uuid": "b81aabcd-1a1e-41cf-91b6-eca0254b3d96",
        "template_variables": {"name": "Alice"},
    }


def test_merge_global_data_is_sent_even_without_template() -> None:
    assert body(simple(merge_global_data={"x": 1}))["template_variables"] == {"x": 1}


def test_esp_extra_is_deep_merged_last() -> None:
    data = body(
        simple(
            headers={"X-A": "a"},
            esp_extra={"headers": {"X-B": "b"}, "subject": "Override", "custom": {"n": 1}},
        )
    )
    assert data["headers"] == {"X-A": "a", "X-B": "b"}
    assert data["subject"] == "Override"
    assert data["custom"] == {"n": 1}


def test_esp_extra_merge_does_not_modify_the_message() -> None:
    extra = {"headers": {"X-B": "b"}}
    message = simple(headers={"X-A": "a"}, esp_extra=extra)
    body(message)
    assert extra == {"headers": {"X-B": "b"}}
    assert message["headers"] == {"X-A": "a"}


@pytest.mark.parametrize(
    ("key", "value"),
    [("track_opens", True), ("track_clicks", False)],
)
def test_unsupported_attributes_raise_even_when_false(key: str, value: object) -> None:
    with pytest.raises(UnsupportedFeature, match=f"Mailtrap does not support {key}"):
        build_payload(simple(**{key: value}))


@pytest.mark.parametrize(
    "when",
    [1700000000, 1700000000.5, "2030-01-01T09:00:00Z", "2030-01-01T09:00:00+02:00",
     datetime(2030, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1)],
)  # fmt: skip
def test_send_at_and_expires_at_leave_the_body_as_it_is(when: object) -> None:
    assert body(simple(send_at=when)) == body(simple())
    assert body(simple(expires_at=when)) == body(simple())


@pytest.mark.parametrize("key", ["send_at", "expires_at"])
@pytest.mark.parametrize("when", ["tomorrow", True, [1], "2030-13-01T00:00:00", -5, 1e20])
def test_a_time_that_is_not_one_is_refused_naming_its_field(key: str, when: object) -> None:
    with pytest.raises(ValidationError) as info:
        build_payload(simple(**{key: when}))
    assert info.value.field == key


@pytest.mark.parametrize("name", ["spring-2030", "news.letter:42_a", "x" * 100])
def test_a_campaign_name_leaves_the_body_as_it_is(name: str) -> None:
    assert body(simple(campaign=name)) == body(simple())


@pytest.mark.parametrize("name", ["", "has space", "x" * 101, "ünïcode", 42, "a/b"])
def test_a_campaign_name_of_other_characters_is_refused(name: object) -> None:
    with pytest.raises(ValidationError) as info:
        build_payload(simple(campaign=name))
    assert info.value.field == "campaign"


def test_envelope_sender_is_unsupported() -> None:
    with pytest.raises(UnsupportedFeature, match="envelope_sender"):
        build_payload(simple(envelope_sender="bounce@example.com"))


@pytest.mark.parametrize("key", ["track_opens", "track_clicks", "envelope_sender"])
def test_unsupported_attributes_are_dropped_when_ignoring(key: str) -> None:
    assert body(simple(**{key: "x@example.com"}), IGNORE) == body(simple())


def test_multiple_from_is_unsupported_and_first_used_when_ignoring() -> None:
    message = simple(from_email="a@example.com, b@example.com")
    with pytest.raises(UnsupportedFeature, match="multiple from emails"):
        build_payload(message)
    assert body(message, IGNORE)["from"] == {"email": "a@example.com"}


def test_from_header_is_unsupported_and_replaces_from_when_ignoring() -> None:
    message = simple(headers={"From": "Header <header@example.com>", "X-A": "1"})
    with pytest.raises(UnsupportedFeature, match="envelope_sender"):
        build_payload(message)
    data = body(message, IGNORE)
    assert data["from"] == {"email": "header@example.com", "name": "Header"}
    assert data["headers"] == {"X-A": "1"}


def test_to_header_is_unsupported_and_dropped_when_ignoring() -> None:
    message = simple(headers={"To": "spoof@example.com"})
    with pytest.raises(UnsupportedFeature, match="spoofing `To` header"):
        build_payload(message)
    assert "headers" not in body(message, IGNORE)


def test_from_falls_back_to_the_configured_default() -> None:
    message = simple()
    del message["from_email"]
    data = body(message, Settings(default_from_email="Default <default@example.com>"))
    assert data["from"] == {"email": "default@example.com", "name": "Default"}


def test_sandbox_send_goes_to_send_with_the_sandbox_id() -> None:
    [call] = build_payload(simple(), Settings(sandbox_id="12345"))
    assert call.path == "send/12345"


def test_empty_sandbox_id_uses_the_transactional_endpoint() -> None:
    [call] = build_payload(simple(), Settings(sandbox_id=""))
    assert call.path == "send"


def test_recipients_are_to_then_cc_then_bcc_with_duplicates() -> None:
    [call] = build_payload(
        simple(to=["a@example.com", "b@example.com"], cc=["a@example.com"], bcc=["c@example.com"])
    )
    assert call.recipients == (
        ("a@example.com", "b@example.com", "a@example.com", "c@example.com"),
    )


def test_call_size_is_the_length_of_the_default_json_dump() -> None:
    [call] = build_payload(simple(subject="Přihláška"))
    assert call_size(call) == len(json.dumps(call.json).encode())


def test_api_call_round_trips_through_a_json_dict() -> None:
    [call] = build_payload(simple(cc=["cc@example.com"]))
    again = ApiCall.from_dict(json.loads(json.dumps(call.to_dict())))
    assert again == call
    assert not again.is_batch


def test_api_call_from_a_malformed_dict_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        ApiCall.from_dict({"path": "send"})


def test_text_attachment_with_a_declared_charset_keeps_it() -> None:
    attachment = {"content": "AA==", "mimetype": "text/plain; charset=iso-8859-1"}
    [wire] = body(simple(attachments=[attachment]))["attachments"]
    assert wire["type"] == "text/plain; charset=iso-8859-1"


@pytest.mark.parametrize(
    "sender", ["not an address", "a@example.com, b@example.com", "bad@", 42, ""]
)
@pytest.mark.parametrize("settings", [None, IGNORE], ids=["refusing", "ignoring"])
def test_a_malformed_envelope_sender_is_invalid_even_when_ignored(
    sender: object, settings: Settings | None
) -> None:
    # As Anymail: the address is parsed before the feature is found unsupported.
    with pytest.raises(ValidationError) as caught:
        build_payload(simple(envelope_sender=sender), settings)

    assert not isinstance(caught.value, UnsupportedFeature)
    assert caught.value.field == "envelope_sender"
