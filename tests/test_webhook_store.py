"""Applying tracking events to status records, against a real Redis."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis

from mailqueue.core.events import TrackingEvent, normalize_event
from mailqueue.records import StatusRecord
from mailqueue.settings import Settings
from mailqueue.store import keys
from mailqueue.store.events import EventStore, parse_index_entry, pick_recipients
from mailqueue.store.keys import Keys
from mailqueue.store.status import PartRef, PartResult, now_iso
from mailqueue.store.stores import Stores

SETTINGS = Settings(status_ttl=3600)
NOW = "2024-05-01T12:00:00.000Z"


def make_send(
    client: redis.Redis, send_id: str, recipients: dict[str, str | None], outcome: str = "sent"
) -> None:
    """A send the delivery side recorded: recipient -> Mailtrap message id (None: failed)."""
    store = Stores.over(client, SETTINGS).store
    with client.pipeline() as pipe:
        store.create(pipe, send_id, parts=1, created_at=now_iso())
        store.record(pipe, PartRef(send_id, 0), PartResult(outcome, recipients))  # type: ignore[arg-type]
        pipe.execute()


def event(name: str, message_id: str, event_id: str | None = None, **extra: Any) -> TrackingEvent:
    raw = {"event": name, "message_id": message_id, "timestamp": 1714564800, **extra}
    if event_id is not None:
        raw["event_id"] = event_id
    return normalize_event(raw)


def record(client: redis.Redis, send_id: str) -> StatusRecord:
    found = Stores.over(client, SETTINGS).store.get(send_id)
    assert found is not None
    return found


def status_of(client: redis.Redis, send_id: str, recipient: str) -> str:
    return str(record(client, send_id)["recipients"][recipient]["status"])


def stats(client: redis.Redis) -> dict[str, int]:
    return Stores.over(client, SETTINGS).store.stats()


@pytest.fixture
def store(redis_client: redis.Redis) -> EventStore:
    return Stores.over(redis_client, SETTINGS).events


def test_a_delivery_moves_a_queued_recipient_to_delivered(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("delivery", "m1", "e1")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "delivered"


def test_a_status_change_keeps_the_message_id_and_stamps_the_times(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("open", "m1", "e1")], NOW)
    entry = record(redis_client, "s1")["recipients"]["alice@example.com"]
    assert entry == {
        "status": "opened",
        "message_id": "m1",
        "updated_at": NOW,
        "event_at": "2024-05-01T12:00:00Z",
    }


def test_the_send_state_is_not_changed_by_events(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("bounce", "m1", "e1")], NOW)
    assert record(redis_client, "s1")["state"] == "sent"


def test_a_late_delivery_does_not_undo_an_open(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("open", "m1", "e2")], NOW)
    store.apply([event("delivery", "m1", "e1")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "opened"


def test_out_of_order_events_in_one_request_end_at_the_furthest_status(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply(
        [event("click", "m1", "e3"), event("delivery", "m1", "e1"), event("open", "m1", "e2")],
        NOW,
    )
    assert status_of(redis_client, "s1", "alice@example.com") == "clicked"


def test_a_bounce_is_final(redis_client: redis.Redis, store: EventStore) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("bounce", "m1", "e1")], NOW)
    store.apply([event("open", "m1", "e2"), event("reject", "m1", "e3")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "bounced"


def test_a_soft_bounce_defers_a_queued_recipient_but_not_a_delivered_one(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1", "bob@example.com": "m2"})
    store.apply([event("delivery", "m2", "e1")], NOW)
    store.apply([event("soft bounce", "m1", "e2"), event("soft bounce", "m2", "e3")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "deferred"
    assert status_of(redis_client, "s1", "bob@example.com") == "delivered"


def test_a_failed_recipient_stays_failed(redis_client: redis.Redis, store: EventStore) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    redis_client.hset(
        Keys().recipients("s1"),
        "alice@example.com",
        json.dumps({"status": "failed", "message_id": "m1"}),
    )
    store.apply([event("delivery", "m1", "e1")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "failed"


def test_an_unknown_event_changes_no_status_but_is_kept_in_history(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("inbound", "m1", "e1")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "queued"
    assert [e["event_type"] for e in record(redis_client, "s1")["events"]] == ["unknown"]


def test_history_is_newest_first(redis_client: redis.Redis, store: EventStore) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("delivery", "m1", "e1")], NOW)
    store.apply([event("open", "m1", "e2")], NOW)
    history = record(redis_client, "s1")["events"]
    assert [e["event_id"] for e in history] == ["e2", "e1"]


def test_history_is_bounded(redis_client: redis.Redis, store: EventStore) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("open", "m1", f"e{i}") for i in range(keys.EVENTS_KEPT + 10)], NOW)
    history = record(redis_client, "s1")["events"]
    assert len(history) == keys.EVENTS_KEPT
    assert history[0]["event_id"] == f"e{keys.EVENTS_KEPT + 9}"


def test_history_expires_with_the_send(redis_client: redis.Redis, store: EventStore) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    redis_client.expire(Keys().send("s1"), 60)  # the send is older than the default TTL
    store.apply([event("delivery", "m1", "e1")], NOW)
    assert 59_000 < redis_client.pttl(Keys().events("s1")) <= 60_000


def test_an_event_seen_before_is_ignored_and_counted(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("open", "m1", "e1")], NOW)
    result = store.apply([event("open", "m1", "e1")], NOW)
    assert (result.recorded, result.duplicates) == (0, 1)
    assert len(record(redis_client, "s1")["events"]) == 1
    assert stats(redis_client)["webhook_duplicates"] == 1


def test_a_duplicate_within_one_request_is_ignored(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    result = store.apply([event("open", "m1", "e1"), event("open", "m1", "e1")], NOW)
    assert (result.recorded, result.duplicates) == (1, 1)


def test_the_event_id_marker_lives_for_the_replay_window(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("open", "m1", "e1")], NOW)
    assert keys.EVENT_ID_TTL - 5 <= redis_client.ttl(Keys().event_seen("e1")) <= keys.EVENT_ID_TTL


def test_events_without_an_event_id_are_all_recorded(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    result = store.apply([event("open", "m1"), event("open", "m1")], NOW)
    assert result.recorded == 2


def test_unknown_message_ids_are_counted_and_ignored(
    redis_client: redis.Redis, store: EventStore
) -> None:
    result = store.apply([event("delivery", "nobody", "e1"), event("open", "nobody", "e2")], NOW)
    assert (result.recorded, result.unknown_message_ids) == (0, 2)
    assert stats(redis_client)["webhook_unknown_message_ids"] == 2
    assert not redis_client.exists(Keys().event_seen("e1"))


def test_an_index_pointing_at_an_expired_send_counts_as_unknown_and_writes_nothing(
    redis_client: redis.Redis, store: EventStore
) -> None:
    redis_client.set(
        Keys().message_index("m1"), json.dumps({"send": "gone", "recipients": ["a@example.com"]})
    )
    result = store.apply([event("delivery", "m1", "e1")], NOW)
    assert result.unknown_message_ids == 1
    assert redis_client.keys("{mq}:*:gone") == []


@pytest.mark.parametrize(("message_id", "event_id"), [("m 1", "e1"), ("m1", "e/../1")])
def test_ids_that_cannot_name_a_key_are_counted_and_ignored(
    redis_client: redis.Redis, store: EventStore, message_id: str, event_id: str
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    result = store.apply([event("delivery", message_id, event_id)], NOW)
    assert (result.recorded, result.invalid_ids) == (0, 1)
    assert stats(redis_client)["webhook_invalid_ids"] == 1
    assert status_of(redis_client, "s1", "alice@example.com") == "queued"


def test_recorded_events_are_counted(redis_client: redis.Redis, store: EventStore) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1"})
    store.apply([event("delivery", "m1", "e1"), event("open", "m1", "e2")], NOW)
    assert stats(redis_client)["webhook_events"] == 2


def test_a_shared_sandbox_id_updates_only_the_recipient_the_event_names(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1", "bob@bücher.example": "m1"})
    store.apply([event("delivery", "m1", "e1", email="BOB@xn--bcher-kva.example")], NOW)
    assert status_of(redis_client, "s1", "bob@bücher.example") == "delivered"
    assert status_of(redis_client, "s1", "alice@example.com") == "queued"


def test_a_shared_id_with_no_matching_email_updates_every_recipient(
    redis_client: redis.Redis, store: EventStore
) -> None:
    make_send(redis_client, "s1", {"alice@example.com": "m1", "bob@example.com": "m1"})
    store.apply([event("delivery", "m1", "e1", email="carol@example.com")], NOW)
    assert status_of(redis_client, "s1", "alice@example.com") == "delivered"
    assert status_of(redis_client, "s1", "bob@example.com") == "delivered"


class CountingRedis(redis.Redis):
    """A client that records every command it sends, and each pipeline as one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        run, commands = pipe.execute, self.commands

        def execute(raise_on_error: bool = True) -> Any:
            commands.append("PIPELINE")
            return run(raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


def test_a_500_event_request_costs_as_many_round_trips_as_a_one_event_request(
    redis_url: str, redis_client: redis.Redis
) -> None:
    store_client = Stores.over(redis_client, SETTINGS).store
    with redis_client.pipeline() as pipe:
        for i in range(500):
            store_client.create(pipe, f"s{i}", parts=1, created_at=now_iso())
            store_client.record(
                pipe, PartRef(f"s{i}", 0), PartResult("sent", {f"r{i}@example.com": f"m{i}"})
            )
        pipe.execute()
    counting = cast(CountingRedis, CountingRedis.from_url(redis_url))
    store = Stores.over(counting, SETTINGS).events
    store.apply([event("delivery", "m0", "warm-up")], NOW)  # loads the script once
    counting.commands.clear()
    store.apply([event("open", "m0", "one")], NOW)
    one = list(counting.commands)
    counting.commands.clear()
    result = store.apply([event("open", f"m{i}", f"e{i}") for i in range(500)], NOW)
    assert result.recorded == 500
    assert counting.commands == one
    # The index look-up, the sends' campaigns, the script.
    assert one == ["PIPELINE", "PIPELINE", "EVALSHA"]
    counting.close()


# -- pure helpers --------------------------------------------------------------


def test_the_index_entry_of_the_delivery_side_is_understood() -> None:
    raw = json.dumps({"send": "s1", "recipients": ["a@example.com", "b@example.com"]})
    assert parse_index_entry(raw) == ("s1", ("a@example.com", "b@example.com"))


def test_the_pair_form_of_the_index_entry_is_understood() -> None:
    assert parse_index_entry('["s1", "a@example.com"]') == ("s1", ("a@example.com",))


@pytest.mark.parametrize("raw", [None, "not json", "5", '{"send": "bad id"}', "[]"])
def test_unusable_index_entries_are_none(raw: str | None) -> None:
    assert parse_index_entry(raw) is None


def test_a_single_indexed_recipient_is_picked_whatever_the_email() -> None:
    assert pick_recipients(["a@example.com"], "other@example.com") == ("a@example.com",)


def test_recipients_match_across_unicode_and_idna_domains() -> None:
    picked = pick_recipients(["a@example.com", "b@bücher.example"], "B@XN--BCHER-KVA.EXAMPLE")
    assert picked == ("b@bücher.example",)
