"""Apply a request's tracking events to the status records in Redis.

A whole request (up to 500 events) costs three round trips: one resolves
every message id through the message-id index (``message_index.py``), one
reads the campaign of the sends found, and one Lua script de-duplicates by
``event_id`` (SET NX EX), moves recipient statuses forward, appends to each
send's bounded history and counts what it did, atomically.

A recipient's status only moves forward, by ``STATUS_RANK``: a late
``delivered`` never undoes an ``opened``, and ``bounced`` / ``rejected`` are
final. ``failed`` (the API refused the recipient) is never left. ``unknown``
events are kept in the history but change no status. The send's own ``state``
describes the API's acceptance, so events never touch it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from mailqueue.core.addresses import comparable
from mailqueue.core.events import TrackingEvent
from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.campaigns import CampaignStore
from mailqueue.store.keys import EVENT_ID_TTL, EVENTS_KEPT, Keys, safe_id
from mailqueue.store.message_index import IndexEntry, MessageIndex, decode_entry
from mailqueue.store.suppressions import SuppressionList

__all__ = ["STATUS_RANK", "ApplyResult", "EventStore", "parse_index_entry", "pick_recipients"]

# Higher ranks win; a status absent from this table (e.g. "unknown") never
# changes anything, and a current status absent from it can be replaced.
STATUS_RANK: Mapping[str, int] = {
    "queued": 0,
    "deferred": 1,
    "delivered": 2,
    "opened": 3,
    "clicked": 4,
    "unsubscribed": 5,
    "complained": 6,
    "rejected": 7,
    "bounced": 7,
    "failed": 8,
}

# KEYS: stats hash, then the keys the operations point at by index.
# ARGV[1]: JSON {ranks, ops, now, kept, evt_ttl, default_ttl_ms, unknown, invalid};
# an op is {s, r, e, d (index of the event-id marker, 0 for none), c (index
# of the send's campaign record, 0 for none), rcpts, mid, status ("" for
# none), at, event (JSON)}.
# Returns {recorded, duplicates, unknown message ids, status changes}.
_APPLY = lua_script("events_apply")


@dataclass(frozen=True)
class ApplyResult:
    """What one request's events did."""

    recorded: int = 0
    duplicates: int = 0
    unknown_message_ids: int = 0
    invalid_ids: int = 0
    status_changes: int = 0


class EventStore(RedisStore):
    """Records tracking events against the status records the delivery side wrote.

    It is handed the stores events feed: the message-id index it resolves
    ids through, the suppression list and the campaigns' records.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        ttl: int,
        index: MessageIndex,
        suppressions: SuppressionList,
        campaigns: CampaignStore,
        url: str = "redis",
    ) -> None:
        super().__init__(client, keys, url=url)
        self.default_ttl_ms = max(int(ttl), 1) * 1000
        self._apply = client.register_script(_APPLY)
        self.index = index
        self.suppressions = suppressions
        self.campaigns = campaigns

    def _campaigns_of(self, entries: Mapping[str, IndexEntry]) -> dict[str, str | None]:
        """The campaign of each message id's send: from the send's record, in one round trip.

        Entries of the earlier index name it themselves.
        """
        sends = sorted({entry.send_id for entry in entries.values() if entry.campaign is None})
        named: dict[str, str | None] = {}
        if sends:
            with self.redis.pipeline(transaction=False) as pipe:
                for send_id in sends:
                    pipe.hget(self.keys.send(send_id), "campaign")
                for send_id, raw in zip(sends, pipe.execute(), strict=True):
                    campaign = raw.decode() if isinstance(raw, bytes) else raw
                    named[send_id] = campaign if safe_id(campaign) else None
        return {
            mid: entry.campaign if entry.campaign is not None else named.get(entry.send_id)
            for mid, entry in entries.items()
        }

    @translated("record tracking events")
    def apply(self, events: Sequence[TrackingEvent], now: str) -> ApplyResult:
        """Record ``events`` (``now`` is the ISO 8601 time stamped on changed recipients)."""
        if not events:
            return ApplyResult()
        usable = [event for event in events if _ids_are_safe(event)]
        invalid = len(events) - len(usable)
        entries = self.index.look_up(sorted({event.message_id for event in usable}))
        index = {mid: (entry.send_id, entry.recipients) for mid, entry in entries.items()}
        campaign_of = self._campaigns_of(entries)

        key_list: list[str] = [self.keys.stats]
        positions: dict[str, int] = {}

        def position(key: str) -> int:
            if key not in positions:
                key_list.append(key)
                positions[key] = len(key_list)  # Lua indexes KEYS from 1
            return positions[key]

        ops: list[dict[str, Any]] = []
        campaigns: set[str] = set()
        unknown = 0
        for event in usable:
            entry = index.get(event.message_id)
            if entry is None:
                unknown += 1
                continue
            send_id, recipients = entry
            campaign = campaign_of.get(event.message_id)
            if campaign:
                campaigns.add(campaign)
            ops.append(
                {
                    "s": position(self.keys.send(send_id)),
                    "r": position(self.keys.recipients(send_id)),
                    "e": position(self.keys.events(send_id)),
                    "d": position(self.keys.event_seen(event.event_id)) if event.event_id else 0,
                    "c": position(self.keys.campaign(campaign)) if campaign else 0,
                    "rcpts": list(pick_recipients(recipients, event.recipient)),
                    "mid": event.message_id,
                    "status": event.event_type if event.event_type in STATUS_RANK else "",
                    "at": event.timestamp,
                    "event": json.dumps(event.to_json(), separators=(",", ":")),
                }
            )
        payload = {
            "ranks": STATUS_RANK,
            "ops": ops,
            "now": now,
            "kept": EVENTS_KEPT,
            "evt_ttl": EVENT_ID_TTL,
            "default_ttl_ms": self.default_ttl_ms,
            "unknown": unknown,
            "invalid": invalid,
        }
        recorded, duplicates, unknown_total, changed = self._apply(
            keys=key_list, args=[json.dumps(payload, separators=(",", ":"))]
        )
        # Both act on facts, not on this delivery: a replayed event changes nothing.
        self.suppressions.note_events(
            (event, _addresses(event, index.get(event.message_id))) for event in usable
        )
        if campaigns:
            self.campaigns.auto_pause(campaigns)
        return ApplyResult(
            recorded=int(recorded),
            duplicates=int(duplicates),
            unknown_message_ids=int(unknown_total),
            invalid_ids=invalid,
            status_changes=int(changed),
        )


def _ids_are_safe(event: TrackingEvent) -> bool:
    # Ids become key names; anything unexpected is counted and skipped.
    if safe_id(event.message_id) is None:
        return False
    return event.event_id is None or safe_id(event.event_id) is not None


def _addresses(
    event: TrackingEvent, entry: tuple[str, tuple[str, ...]] | None
) -> tuple[str, ...]:
    """Whom an event concerns: its ``email``, else the recipients of its message id."""
    if event.recipient:
        return (event.recipient,)
    return pick_recipients(entry[1], None) if entry is not None else ()


def parse_index_entry(raw: bytes | str | None) -> tuple[str, tuple[str, ...]] | None:
    """``(send_id, recipients)`` from a message-index value, or None when absent or unusable.

    Accepts the compact value, ``{"send": id, "recipients": [...]}`` and the older
    ``[send_id, recipient]`` (``message_index.decode_entry``).
    """
    entry = decode_entry(raw)
    return None if entry is None else (entry.send_id, entry.recipients)


def pick_recipients(recipients: Sequence[str], email: str | None) -> tuple[str, ...]:
    """The recipients an event concerns.

    The sandbox gives every recipient of a message the same id, so when the
    index lists several, the event's ``email`` picks one, compared
    case-insensitively and across the Unicode / IDNA forms of the domain.
    With no match every listed recipient is concerned.
    """
    if len(recipients) <= 1 or not email:
        return tuple(recipients)
    wanted = comparable(email)
    matching = tuple(r for r in recipients if comparable(r) == wanted)
    return matching or tuple(recipients)


