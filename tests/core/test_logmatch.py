"""Matching Email Logs entries to the requests of a call whose answer was lost."""

from __future__ import annotations

from mailqueue.core.calltag import Tag
from mailqueue.core.logmatch import Logged, Pending, match_requests, parse_logged


def logged(message_id: str, to: str, tag: Tag | None = None, subject: str = "Hi") -> Logged:
    return Logged(message_id, to, subject, None, tag)


def pending(
    send: str, recipients: tuple[str, ...], tagged: bool = True, request: int = 0
) -> Pending:
    return Pending(Tag(send, 0, request, 1), tagged, recipients, "Hi")


def test_a_tagged_request_is_found_with_its_message_ids() -> None:
    tag = Tag("s1", 0, 0, 1)
    items = [logged("id-b", "B@example.com", tag), logged("id-a", "a@example.com", tag)]
    (verdict,) = match_requests([pending("s1", ("a@example.com", "b@example.com"))], items)
    assert verdict.outcome == "found"
    assert verdict.message_ids == {"a@example.com": "id-a", "b@example.com": "id-b"}
    assert verdict.copies == 1


def test_a_tagged_request_with_nothing_listed_is_absent() -> None:
    other = logged("id-x", "a@example.com", Tag("s2", 0, 0, 1))
    untagged = logged("id-y", "a@example.com")
    (verdict,) = match_requests([pending("s1", ("a@example.com",))], [other, untagged])
    assert verdict.outcome == "absent"


def test_an_earlier_attempt_in_the_logs_counts_and_two_attempts_are_two_copies() -> None:
    items = [
        logged("id-1", "a@example.com", Tag("s1", 0, 0, 0)),
        logged("id-2", "a@example.com", Tag("s1", 0, 0, 1)),
    ]
    (verdict,) = match_requests([pending("s1", ("a@example.com",))], items)
    assert verdict.outcome == "found"
    assert verdict.message_ids == {"a@example.com": "id-1"}
    assert verdict.copies == 2


def test_an_untagged_request_is_found_when_its_messages_are_unambiguous() -> None:
    items = [logged("id-a", "a@example.com"), logged("id-z", "a@example.com", subject="Other")]
    (verdict,) = match_requests([pending("s1", ("a@example.com",), tagged=False)], items)
    assert verdict.outcome == "found"
    assert verdict.message_ids == {"a@example.com": "id-a"}


def test_an_untagged_request_is_absent_when_none_of_its_recipients_has_a_message() -> None:
    (verdict,) = match_requests([pending("s1", ("a@example.com",), tagged=False)], [])
    assert verdict.outcome == "absent"


def test_an_untagged_request_is_undecided_when_two_messages_could_be_it() -> None:
    items = [logged("id-1", "a@example.com"), logged("id-2", "a@example.com")]
    (verdict,) = match_requests([pending("s1", ("a@example.com",), tagged=False)], items)
    assert verdict.outcome == "unsure"


def test_two_untagged_requests_to_the_same_address_and_subject_are_undecided() -> None:
    requests = [
        pending("s1", ("a@example.com",), tagged=False),
        pending("s2", ("a@example.com",), tagged=False),
    ]
    verdicts = match_requests(requests, [logged("id-1", "a@example.com")])
    assert [v.outcome for v in verdicts] == ["unsure", "unsure"]


def test_an_untagged_request_found_for_some_recipients_only_is_undecided() -> None:
    request = pending("s1", ("a@example.com", "b@example.com"), tagged=False)
    (verdict,) = match_requests([request], [logged("id-1", "a@example.com")])
    assert verdict.outcome == "unsure"


def test_an_international_domain_matches_its_ascii_form() -> None:
    tag = Tag("s1", 0, 0, 1)
    items = [logged("id-1", "user@xn--bcher-kva.example", tag)]
    (verdict,) = match_requests([pending("s1", ("user@bücher.example",))], items)
    assert verdict.message_ids == {"user@bücher.example": "id-1"}


def test_an_api_item_parses_with_its_tag_and_time() -> None:
    item = parse_logged(
        {
            "message_id": "m1",
            "to": "a@example.com",
            "subject": "Hi",
            "sent_at": "2025-01-15T10:30:00Z",
            "custom_variables": {"mq_tag": "s1.0.2.3"},
        }
    )
    assert item is not None
    assert item.tag == Tag("s1", 0, 2, 3)
    assert item.sent_at is not None and item.sent_at.year == 2025
    assert parse_logged({"to": "a@example.com"}) is None
