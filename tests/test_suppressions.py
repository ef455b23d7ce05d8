"""The suppression list on a real Redis: addresses compared as mailboxes do, fed by webhooks."""

from __future__ import annotations

import io
from typing import Any

import pytest
import redis

from mailqueue.core.csv_table import neutralize_formula, restore_formula
from mailqueue.core.events import normalize_event
from mailqueue.errors import ValidationError
from mailqueue.settings import Settings
from mailqueue.store.events import EventStore
from mailqueue.store.keys import Keys
from mailqueue.store.stores import Stores
from mailqueue.store.suppressions import SuppressionList, read_csv, write_csv

SETTINGS = Settings(status_ttl=3600, soft_bounce_limit=3, soft_bounce_days=7)


@pytest.fixture
def suppressions(redis_client: redis.Redis) -> SuppressionList:
    return SuppressionList(redis_client, Keys(), soft_bounce_limit=3, soft_bounce_days=7)


def event(name: str, email: str, event_id: str, timestamp: int = 1714564800) -> Any:
    return normalize_event(
        {
            "event": name,
            "message_id": "m-unknown",
            "email": email,
            "event_id": event_id,
            "timestamp": timestamp,
        }
    )


def test_an_unknown_address_is_not_suppressed(suppressions: SuppressionList) -> None:
    assert suppressions.get("alice@example.com") is None


def test_a_suppression_reads_back_with_its_reason_and_stream(
    suppressions: SuppressionList,
) -> None:
    suppressions.suppress("Alice <alice@example.com>", reason="asked by phone")
    found = suppressions.get("alice@example.com")
    assert found is not None
    assert (found["address"], found["reason"], found["stream"]) == (
        "alice@example.com",
        "asked by phone",
        None,
    )
    assert found["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("alice@bücher.example", "ALICE@xn--bcher-kva.example"),
        ("alice@xn--bcher-kva.example", "alice@Bücher.example"),
    ],
)
def test_addresses_compare_case_insensitively_and_across_idna(
    suppressions: SuppressionList, stored: str, asked: str
) -> None:
    suppressions.suppress(stored)
    assert suppressions.get(asked) is not None
    assert suppressions.suppressed([asked], "transactional") == {asked}


def test_unsuppress_lets_the_address_through_again(suppressions: SuppressionList) -> None:
    suppressions.suppress("alice@example.com")
    assert suppressions.unsuppress("ALICE@example.com") is True
    assert suppressions.get("alice@example.com") is None
    assert suppressions.unsuppress("alice@example.com") is False


def test_a_bulk_only_suppression_leaves_transactional_mail_alone(
    suppressions: SuppressionList,
) -> None:
    suppressions.suppress("alice@example.com", stream="bulk")
    assert suppressions.suppressed(["alice@example.com"], "bulk") == {"alice@example.com"}
    assert suppressions.suppressed(["alice@example.com"], "transactional") == set()


def test_a_suppression_of_every_stream_is_never_narrowed(suppressions: SuppressionList) -> None:
    suppressions.suppress("alice@example.com", reason="hard_bounce")
    suppressions.suppress("alice@example.com", reason="unsubscribe", stream="bulk")
    found = suppressions.get("alice@example.com")
    assert found is not None and (found["stream"], found["reason"]) == (None, "hard_bounce")


def test_both_streams_suppressed_one_by_one_make_every_stream(
    suppressions: SuppressionList,
) -> None:
    suppressions.suppress("alice@example.com", stream="bulk")
    suppressions.suppress("alice@example.com", stream="transactional")
    found = suppressions.get("alice@example.com")
    assert found is not None and found["stream"] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"address": "not an address"}, "address"),
        ({"address": "a@example.com, b@example.com"}, "address"),
        ({"address": "a@example.com", "stream": "marketing"}, "stream"),
        ({"address": "a@example.com", "reason": ""}, "reason"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    suppressions: SuppressionList, kwargs: dict[str, Any], field: str
) -> None:
    address = kwargs.pop("address")
    with pytest.raises(ValidationError) as info:
        suppressions.suppress(address, **kwargs)
    assert info.value.field == field
    assert len(suppressions) == 0


def test_import_validates_every_row_before_writing_any(suppressions: SuppressionList) -> None:
    rows = [{"email": "a@example.com"}, {"email": "broken"}]
    with pytest.raises(ValidationError) as info:
        suppressions.import_rows(rows)
    assert info.value.index == 1
    assert len(suppressions) == 0


def test_import_then_iterate_gives_every_row_back(suppressions: SuppressionList) -> None:
    rows = [
        {"email": f"user{i}@example.com", "reason": "legacy", "stream": "bulk" if i % 2 else ""}
        for i in range(2500)
    ]
    assert suppressions.import_rows(rows) == 2500
    listed = {s["address"]: s for s in suppressions}
    assert len(listed) == 2500
    assert listed["user1@example.com"]["stream"] == "bulk"
    assert listed["user2@example.com"]["stream"] is None


def test_an_address_repeated_in_an_import_is_one_suppression(
    suppressions: SuppressionList,
) -> None:
    rows = [{"email": "a@example.com"}, {"email": "A@Example.com"}, {"email": "b@example.com"}]

    assert suppressions.import_rows(rows) == 2
    assert len(suppressions) == 2


@pytest.mark.parametrize(
    "cell", ["=1+2@example.com", "+a@example.com", "-a@example.com", "@home", "\tx", "\rx", "ok"]
)
def test_a_formula_guard_reads_back_to_the_cell(cell: str) -> None:
    guarded = neutralize_formula(cell)

    assert guarded == cell if cell == "ok" else guarded == "'" + cell
    assert restore_formula(guarded) == cell


def test_a_written_csv_reads_back_with_its_addresses(suppressions: SuppressionList) -> None:
    suppressions.suppress("=x@example.com", reason="-1", stream="bulk")
    out = io.StringIO()
    write_csv(suppressions.entries(), out)

    (row,) = read_csv(io.StringIO(out.getvalue(), newline=""))

    assert "'=x@example.com" in out.getvalue() and "'-1" in out.getvalue()
    assert (row["address"], row["reason"], row["stream"], row["row"]) == (
        "=x@example.com", "-1", "bulk", 2)


# -- fed by tracking events -----------------------------------------------


@pytest.fixture
def events(redis_client: redis.Redis) -> EventStore:
    return Stores.over(redis_client, SETTINGS).events


@pytest.mark.parametrize(
    ("name", "stream", "reason"),
    [
        ("bounce", None, "hard_bounce"),
        ("spam", None, "spam_complaint"),
        ("spam_complaint", None, "spam_complaint"),
        ("unsubscribe", "bulk", "unsubscribe"),
    ],
)
def test_a_webhook_event_suppresses_its_recipient(
    events: EventStore, suppressions: SuppressionList, name: str, stream: str | None, reason: str
) -> None:
    events.apply([event(name, "Bob@Example.com", "e1")], "2024-05-01T12:00:00Z")
    found = suppressions.get("bob@example.com")
    assert found is not None and (found["stream"], found["reason"]) == (stream, reason)


@pytest.mark.parametrize("name", ["delivery", "open", "click", "reject", "suspension"])
def test_other_events_suppress_nothing(
    events: EventStore, suppressions: SuppressionList, name: str
) -> None:
    events.apply([event(name, "bob@example.com", "e1")], "2024-05-01T12:00:00Z")
    assert suppressions.get("bob@example.com") is None


def test_soft_bounces_suppress_at_the_limit_within_the_window(
    events: EventStore, suppressions: SuppressionList
) -> None:
    day = 86400
    events.apply([event("soft bounce", "bob@example.com", "s1", 1_000_000)], "now")
    events.apply([event("soft bounce", "bob@example.com", "s2", 1_000_000 + day)], "now")
    assert suppressions.get("bob@example.com") is None
    events.apply([event("soft bounce", "bob@example.com", "s3", 1_000_000 + 2 * day)], "now")
    found = suppressions.get("bob@example.com")
    assert found is not None and found["reason"] == "soft_bounce"


def test_soft_bounces_outside_the_window_or_replayed_do_not_add_up(
    events: EventStore, suppressions: SuppressionList
) -> None:
    week = 7 * 86400
    events.apply([event("soft bounce", "bob@example.com", "s1", 1_000_000)], "now")
    events.apply([event("soft bounce", "bob@example.com", "s1", 1_000_000)], "now")
    events.apply([event("soft bounce", "bob@example.com", "s2", 1_000_000 + week + 10)], "now")
    events.apply([event("soft bounce", "bob@example.com", "s2", 1_000_000 + week + 10)], "now")
    assert suppressions.get("bob@example.com") is None
