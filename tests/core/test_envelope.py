"""Envelopes: what waits in the outbox for one part, its lane, and its wire form (pure)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from mailqueue.core.envelope import Envelope, PartRef, envelopes_for, lane_for
from mailqueue.core.payload import ApiCall, Prepared, build_payload, prepare
from mailqueue.core.routing import resolve_route
from mailqueue.settings import Settings

SETTINGS = Settings(api_token="tok")


def message(**extra: Any) -> dict[str, Any]:
    base = {"from_email": "shop@example.com", "to": ["a@example.com"], "subject": "S", "text": "T"}
    return base | extra


def calls(**extra: Any) -> list[ApiCall]:
    return build_payload(message(**extra), SETTINGS)


def prepared(parts: int = 1, settings: Settings = SETTINGS, **extra: Any) -> Prepared:
    """A validated message; ``parts`` > 1 cuts it into that many parts (as a big batch is)."""
    ready = prepare(message(**extra), settings)
    return dataclasses.replace(ready, calls=ready.calls * parts)


@pytest.mark.parametrize(
    ("stream", "campaign", "parts", "lane"),
    [
        ("transactional", None, 1, "transactional"),
        ("bulk", None, 1, "bulk"),
        ("transactional", "spring", 1, "bulk"),
        ("transactional", None, 2, "bulk"),
    ],
)
def test_only_a_lone_transactional_send_takes_the_transactional_lane(
    stream: Any, campaign: str | None, parts: int, lane: str
) -> None:
    assert lane_for(stream=stream, campaign=campaign, parts=parts) == lane


def test_a_lone_send_is_one_transactional_envelope_without_the_producers_path() -> None:
    sandboxed = prepared(settings=Settings(api_token="tok", sandbox_id="7"))
    assert sandboxed.calls[0].path == "send/7"

    (envelope,) = envelopes_for(sandboxed, send_id="s1")

    assert envelope.call.path == "send"
    assert (envelope.lane, envelope.lane_key, envelope.kind) == ("transactional", "", "send")


def test_a_campaigns_envelopes_wait_in_its_own_bulk_stream() -> None:
    envelopes = envelopes_for(prepared(2), send_id="s1", group="g1", campaign="spring")

    assert [(e.part, e.lane, e.lane_key) for e in envelopes] == [
        (0, "bulk", "spring"),
        (1, "bulk", "spring"),
    ]


def test_a_send_of_several_calls_is_a_campaign_of_its_own_and_a_group_names_its_stream() -> None:
    several = envelopes_for(prepared(2), send_id="s1")
    grouped = envelopes_for(prepared(), send_id="s2", group="g2")

    assert {e.lane_key for e in several} == {"s1"}
    assert grouped[0].lane_key == "g2"


def test_an_unknown_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sending stream 'marketing'"):
        envelopes_for(prepared(), send_id="s1", stream="marketing")


def test_an_envelope_round_trips_through_its_wire_form() -> None:
    (envelope,) = envelopes_for(
        prepared(to=["a@example.com", "b@example.com"]),
        send_id="s1",
        stream="bulk",
        account="eu",
        group="g1",
        campaign="spring",
        expires_at=2_000_000_000.0,
    )
    envelope.attempt, envelope.resend_at = 2, 1_900_000_000.0
    envelope.last_error = {"kind": "transient", "message": "503"}

    again = Envelope.decode(envelope.encode(), entry_id="1-0", stream="outbox")

    assert again == envelope
    assert (again.entry_id, again.stream) == ("1-0", "outbox")


def test_the_wire_form_leaves_out_what_is_empty_or_the_default() -> None:
    (envelope,) = envelopes_for(prepared(), send_id="s1")

    assert set(json.loads(envelope.encode())) == {"v", "id", "part", "kind", "msg", "attempt"}


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "s", "part": 0, "kind": "post", "body": {}, "rcpt": []},
        {"id": "s", "part": 0, "kind": "send", "body": [], "rcpt": []},
        {"id": "s", "part": 0, "kind": "send", "body": {}, "rcpt": [], "lane": "fast"},
        {"id": "s", "part": 0, "kind": "send", "body": {}, "rcpt": [], "mail_stream": "x"},
    ],
)
def test_what_is_not_an_envelope_does_not_decode(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not an envelope"):
        Envelope.decode(json.dumps(raw))


def test_an_envelope_of_the_earlier_format_keeps_its_sandbox_inbox() -> None:
    (call,) = calls()
    earlier = ApiCall("send/12%2034", call.json, call.recipients)
    raw = {"id": "s1", "part": 0, "call": earlier.to_dict()}

    envelope = Envelope.decode(json.dumps(raw))

    assert envelope.call.path == "send"
    assert envelope.legacy_sandbox == "12 34"


def test_the_outgoing_call_is_what_is_sent_and_the_route_gives_its_path() -> None:
    (envelope,) = envelopes_for(prepared(to=["a@example.com", "b@example.com"]), send_id="s1")
    (fewer,) = calls()
    envelope.outgoing = fewer
    route = resolve_route(Settings(api_token="tok", sandbox_id="7"))

    sent = envelope.call_for(route)

    assert sent.path == "send/7"
    assert sent.recipients == fewer.recipients
    assert envelope.flat_recipients == ["a@example.com", "b@example.com"]


def test_the_part_reference_counts_every_recipient_of_the_call() -> None:
    (envelope,) = envelopes_for(
        prepared(to=["a@example.com"], cc=["c@example.com"]), send_id="s1", campaign="spring"
    )

    assert envelope.ref == PartRef("s1", 0, None, "spring", 2, None)
