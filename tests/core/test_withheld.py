"""Suppressed recipients taken out of a call before it is sent (pure)."""

from __future__ import annotations

from typing import Any

from mailqueue.core.payload import ApiCall, build_payload, without_recipients


def single() -> ApiCall:
    (call,) = build_payload(
        {
            "from_email": "shop@example.com",
            "to": ["a@example.com", "b@example.com"],
            "cc": ["c@example.com"],
            "subject": "s",
            "text": "t",
        }
    )
    return call


def batch() -> ApiCall:
    (call,) = build_payload(
        {
            "from_email": "shop@example.com",
            "to": ["a@example.com", "b@example.com"],
            "cc": ["c@example.com", "d@example.com"],
            "bcc": ["e@example.com"],
            "subject": "s",
            "text": "t",
            "merge_data": {"a@example.com": {"n": 1}, "b@example.com": {"n": 2}},
        }
    )
    assert call.is_batch
    return call


def emails(entries: list[dict[str, Any]] | None) -> list[str]:
    return [entry["email"] for entry in entries or []]


def test_nothing_to_drop_leaves_the_call_as_it_is() -> None:
    call = batch()
    assert without_recipients(call, set()) is call


def test_a_single_send_loses_just_the_suppressed_addresses() -> None:
    call = without_recipients(single(), {"b@example.com", "c@example.com"})
    assert call is not None
    assert emails(call.json["to"]) == ["a@example.com"]
    assert "cc" not in call.json
    assert call.recipients == (("a@example.com",),)


def test_a_single_send_with_every_recipient_suppressed_is_not_sent() -> None:
    everyone = {"a@example.com", "b@example.com", "c@example.com"}
    assert without_recipients(single(), everyone) is None


def test_a_batch_request_whose_to_is_suppressed_is_dropped() -> None:
    call = without_recipients(batch(), {"A@Example.com"})
    assert call is not None
    requests = call.json["requests"]
    assert [emails(r["to"]) for r in requests] == [["b@example.com"]]
    copies = ("c@example.com", "d@example.com", "e@example.com")
    assert call.recipients == (("b@example.com", *copies),)


def test_a_suppressed_cc_or_bcc_is_taken_out_of_every_batch_request() -> None:
    call = without_recipients(batch(), {"d@example.com", "e@example.com"})
    assert call is not None
    for request in call.json["requests"]:
        assert emails(request["cc"]) == ["c@example.com"]
        assert "bcc" not in request
    assert call.recipients == (
        ("a@example.com", "c@example.com"),
        ("b@example.com", "c@example.com"),
    )


def test_a_batch_with_every_to_suppressed_is_not_sent() -> None:
    assert without_recipients(batch(), {"a@example.com", "b@example.com"}) is None
