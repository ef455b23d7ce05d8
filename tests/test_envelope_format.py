"""Envelopes carry the validated message for the worker to render; earlier ones still decode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailqueue.core.envelope import MESSAGE_FORMAT, Envelope, envelopes_for
from mailqueue.core.payload import ApiCall, build_payload, prepare
from mailqueue.settings import Settings

PRODUCER = Settings(default_from_email="Producer <producer@example.com>")
WORKER = Settings(default_from_email="Worker <worker@example.com>", sandbox_id="7")

MESSAGE: dict[str, Any] = {
    "from_email": '"Shop, Inc." <shop@example.com>',
    "to": ["Ann <ann@example.com>", "bob@bücher.example", '"odd local"@example.com'],
    "cc": ["Ünïcode Name <cc@example.com>"],
    "bcc": ["bcc@example.com"],
    "reply_to": ["help@example.com", "Desk <desk@example.com>"],
    "subject": "Your order",
    "text": "Thanks",
    "html": "<p>Thanks</p>",
    "headers": {"X-Order": 7},
    "metadata": {"order": 7},
    "tags": ["orders"],
    "attachments": [
        {"filename": "a.txt", "content": "aGVsbG8=", "mimetype": "text/plain"},
        {"filename": "i.png", "content": "aGVsbG8=", "inline": True, "content_id": "logo"},
    ],
    "esp_extra": {"category": "x"},
}


def envelopes(message: dict[str, Any], settings: Settings = PRODUCER) -> list[Envelope]:
    return envelopes_for(prepare(message, settings), send_id="s1")


def decoded(envelope: Envelope) -> Envelope:
    return Envelope.decode(envelope.encode())


def test_an_envelope_carries_the_message_not_a_body() -> None:
    [envelope] = envelopes(MESSAGE)

    data = json.loads(envelope.encode())

    assert data["v"] == MESSAGE_FORMAT
    assert "body" not in data and "rcpt" not in data
    assert data["msg"]["subject"] == "Your order"


def test_a_decoded_envelope_equals_the_one_encoded() -> None:
    [envelope] = envelopes(MESSAGE)

    assert decoded(envelope) == envelope
    assert decoded(envelope).encode() == envelope.encode()


def test_the_worker_renders_the_payload_build_payload_gives_with_its_settings() -> None:
    [envelope] = envelopes(MESSAGE)
    [expected] = build_payload(MESSAGE, WORKER)

    call = decoded(envelope).render(WORKER)

    assert (call.path, call.json, call.recipients) == ("send", expected.json, expected.recipients)


def test_a_message_naming_no_sender_takes_the_workers_default() -> None:
    message = {**MESSAGE}
    del message["from_email"]
    [envelope] = envelopes(message)

    call = decoded(envelope).render(WORKER)

    assert call.json["from"] == {"email": "worker@example.com", "name": "Worker"}
    assert call.json == build_payload(message, WORKER)[0].json


def test_a_worker_with_no_default_sender_keeps_the_producers() -> None:
    message = {**MESSAGE}
    del message["from_email"]
    [envelope] = envelopes(message)

    call = decoded(envelope).render(Settings())

    assert call.json["from"] == {"email": "producer@example.com", "name": "Producer"}


def test_a_sender_named_in_a_from_header_is_kept() -> None:
    message = {**MESSAGE, "headers": {"From": "Header <header@example.com>"}}
    del message["from_email"]
    settings = Settings(default_from_email="p@example.com", ignore_unsupported_features=True)
    [envelope] = envelopes(message, settings)

    call = decoded(envelope).render(WORKER)

    assert call.json["from"] == {"email": "header@example.com", "name": "Header"}


def test_each_part_of_a_batch_carries_only_its_recipients_and_merge_data() -> None:
    to = [f"r{i}@example.com" for i in range(1200)]
    message = {
        "from_email": "shop@example.com",
        "to": to,
        "cc": ["copy@example.com"],
        "subject": "Hi {{n}}",
        "text": "Hello",
        "merge_data": {address: {"n": i} for i, address in enumerate(to)},
        "merge_metadata": {to[700]: {"k": "v"}},
    }
    parts = envelopes(message)
    calls = build_payload(message, WORKER)

    assert len(parts) == len(calls) == 3
    forms = [json.loads(part.encode())["msg"] for part in parts]
    assert [len(form["to"]) for form in forms] == [500, 500, 200]
    assert [len(form["merge_data"]) for form in forms] == [500, 500, 200]
    assert [form["merge_metadata"] for form in forms] == [{}, {to[700]: {"k": "v"}}, {}]
    for part, call in zip(parts, calls, strict=True):
        rendered = decoded(part).render(WORKER)
        assert (rendered.path, rendered.json, rendered.recipients) == (
            "batch",
            call.json,
            call.recipients,
        )


def test_recipients_and_kind_are_known_without_rendering() -> None:
    [envelope] = envelopes({**MESSAGE, "merge_data": {}})
    again = decoded(envelope)

    assert again.kind == "batch"
    assert again.rendered is None
    assert again.flat_recipients == [
        "ann@example.com", "cc@example.com", "bcc@example.com",
        "bob@bücher.example", "cc@example.com", "bcc@example.com",
        '"odd local"@example.com', "cc@example.com", "bcc@example.com",
    ]  # fmt: skip
    assert again.ref.recipients == 9
    assert again.rendered is None


def test_a_retried_envelope_is_queued_as_its_message_again() -> None:
    [envelope] = envelopes(MESSAGE)
    envelope.render(WORKER)
    envelope.attempt = 2

    data = json.loads(envelope.encode())

    assert (data["v"], data["attempt"], "body" in data) == (MESSAGE_FORMAT, 2, False)


# -- the earlier formats -------------------------------------------------------------


BODY = {"from": {"email": "old@example.com"}, "to": [{"email": "a@example.com"}], "text": "x"}
EARLIER = {"id": "s1", "part": 0, "kind": "send", "body": BODY, "rcpt": [["a@example.com"]]}


def test_an_envelope_carrying_a_body_decodes_and_sends_it_unchanged() -> None:
    envelope = Envelope.decode(json.dumps({**EARLIER, "attempt": 1}))

    assert (envelope.message, envelope.kind, envelope.attempt) == (None, "send", 1)
    assert envelope.render(WORKER) == ApiCall("send", BODY, (("a@example.com",),))
    assert envelope.flat_recipients == ["a@example.com"]


def test_an_envelope_carrying_a_body_is_encoded_in_its_own_format() -> None:
    raw = json.dumps({**EARLIER, "attempt": 0}, separators=(",", ":"))

    assert Envelope.decode(raw).encode() == raw


def test_an_envelope_of_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        Envelope.decode(json.dumps({**EARLIER, "v": 9}))


def test_an_envelope_whose_kind_is_not_its_messages_is_refused() -> None:
    [envelope] = envelopes(MESSAGE)
    data = {**json.loads(envelope.encode()), "kind": "batch"}

    with pytest.raises(ValueError, match="kind"):
        Envelope.decode(json.dumps(data))


def test_an_envelope_carries_a_message_or_a_body() -> None:
    with pytest.raises(ValueError):
        Envelope(send_id="s1", part=0)
