"""Campaign records: a named set of sends you can follow, pause, resume and cancel.

A message joins a campaign with its ``campaign`` key (or ``enqueue_many(...,
campaign=NAME)``). The record is one Redis hash of counters that the
producer, the workers and the webhook move as recipients advance, so reading
a campaign costs one round trip whatever its size:

    state                running | paused | cancelled (finished is derived)
    recipients           every recipient ever enqueued under the name
    n:<where>            recipients at that point: waiting, sending, sent,
                         failed, cancelled, suppressed, expired, then the
                         tracking statuses (delivered, opened, bounced, ...)
    reason               why a pause happened (``manual`` or an auto-pause)
    duplicates           rows of its campaign files left out: their address
                         came earlier in the same file
    first_sent_at, last_sent_at, handed
                         when recipients were handed to Mailtrap, and how
                         many: the rate behind ``eta_seconds``

Each recipient sits under exactly one ``n:`` counter, its furthest point, so
the counts always add up to ``recipients``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypedDict, cast

import redis

from mailqueue.core.message import campaign_name
from mailqueue.errors import ValidationError
from mailqueue.settings import Settings
from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.keys import Keys

__all__ = [
    "CAMPAIGN_STATES",
    "ENDED_STATES",
    "CampaignRecord",
    "CampaignStore",
    "bucket_of",
    "record_from_fields",
]

CAMPAIGN_STATES = ("running", "paused", "cancelled", "finished")
# States a campaign never leaves.
ENDED_STATES = frozenset({"finished", "cancelled"})

# A recipient's status in its send record -> where its campaign counts it.
# Mailtrap's acceptance reads ``queued`` in a send record (Anymail's word);
# a campaign calls it ``sent``.
_BUCKETS: Mapping[str, str] = {"queued": "sent"}

# Tracking statuses a campaign watches for an auto-pause.
BOUNCED = ("bounced",)
COMPLAINED = ("complained",)
# Points where a recipient has not (yet) been handed to Mailtrap.
_NOT_HANDED = frozenset({"waiting", "sending", "cancelled", "suppressed", "expired", "failed"})


def bucket_of(status: str) -> str:
    """Where a campaign counts a recipient whose send record reads ``status``."""
    return _BUCKETS.get(status, status)


class CampaignRecord(TypedDict):
    """What ``get_campaign`` returns."""

    name: str
    state: str
    recipients: int
    counts: dict[str, int]
    eta_seconds: float | None
    rate_per_second: float | None
    reason: str | None
    created_at: str | None
    updated_at: str | None
    duplicates: int


# Change a campaign's state. KEYS: the record. ARGV: wanted state, reason,
# now (ISO). Answers the state before the change ('' for no record); a
# cancelled campaign never changes again.
_SET_STATE = lua_script("campaigns_set_state")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def record_from_fields(name: str, raw: Mapping[Any, Any], now: float) -> CampaignRecord:
    """The public record from the hash's fields (pure)."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    counts: dict[str, int] = {}
    for field, value in fields.items():
        if field.startswith("n:") and int(value) > 0:
            counts[field[2:]] = int(value)
    state = fields.get("state", "running")
    sending = counts.pop("sending", 0)
    waiting = counts.pop("waiting", 0)
    if state == "cancelled":
        # Workers give each waiting recipient ``cancelled`` as they meet it;
        # none of them will ever be sent, so it already reads that way.
        if waiting:
            counts["cancelled"] = counts.get("cancelled", 0) + waiting
        waiting = 0
        # Claimed by a worker when the cancel came: each ends cancelled unless
        # its call had already started, so none of them waits any more.
        if sending:
            counts["cancelling"] = sending
        sending = 0
    waiting += sending
    counts["waiting"] = waiting
    recipients = int(fields.get("recipients", 0))
    rate = _rate(fields)
    if state == "running" and waiting == 0 and recipients:
        state = "finished"
    eta: float | None
    if waiting == 0:
        eta = 0.0
    elif state in ("paused", "cancelled") or not rate:
        eta = None
    else:
        eta = round(waiting / rate, 1)
    return CampaignRecord(
        name=name,
        state=state,
        recipients=recipients,
        counts=counts,
        eta_seconds=eta,
        rate_per_second=round(rate, 2) if rate else None,
        reason=fields.get("reason") or None,
        created_at=fields.get("created_at"),
        updated_at=fields.get("updated_at"),
        duplicates=int(fields.get("duplicates", 0)),
    )


def _rate(fields: Mapping[str, str]) -> float | None:
    """Recipients handed to Mailtrap per second, from the first hand-over to the last."""
    try:
        first = float(fields["first_sent_at"])
        last = float(fields["last_sent_at"])
        handed = int(fields["handed"])
    except (KeyError, ValueError):
        return None
    if last - first < 1.0 or handed <= 0:
        return None
    return handed / (last - first)


class CampaignStore(RedisStore):
    """Reads and writes campaign records; one per client."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        ttl: int,
        thresholds: Settings,
        url: str = "redis",
    ) -> None:
        super().__init__(client, keys, url=url)
        # Its ``campaign_*`` auto-pause thresholds (``auto_pause_reason``).
        self.thresholds = thresholds
        self.ttl = max(int(ttl), 1)
        self._set_state = client.register_script(_SET_STATE)

    # -- producer side --------------------------------------------------

    @translated("read a campaign's state")
    def check_open(self, name: str) -> None:
        """Refuse to add to a cancelled campaign (ValidationError naming ``campaign``)."""
        if self.redis.hget(self.keys.campaign(name), "state") == b"cancelled":
            raise ValidationError(f"campaign {name!r} was cancelled", field="campaign")

    def add(self, pipe: redis.client.Pipeline, name: str, recipients: int) -> None:
        """Queue the commands counting ``recipients`` more waiting recipients of ``name``."""
        key = self.keys.campaign(name)
        stamp = _now_iso()
        pipe.hsetnx(key, "state", "running")
        pipe.hsetnx(key, "created_at", stamp)
        pipe.hset(key, "updated_at", stamp)
        pipe.hincrby(key, "recipients", recipients)
        pipe.hincrby(key, "n:waiting", recipients)
        pipe.expire(key, self.ttl)
        now = time.time()
        pipe.zadd(self.keys.campaigns, {name: now}, nx=True)
        # Names outlive their records by at most a status TTL.
        pipe.zremrangebyscore(self.keys.campaigns, "-inf", f"({now - self.ttl}")

    def note_repeated(self, pipe: redis.client.Pipeline, name: str, rows: int) -> None:
        """Queue the command counting ``rows`` left out of ``name`` as repeated addresses."""
        pipe.hincrby(self.keys.campaign(name), "duplicates", rows)

    # -- worker side ----------------------------------------------------

    def move(
        self,
        pipe: redis.client.Pipeline,
        name: str,
        changes: Mapping[str, int],
        *,
        handed: int = 0,
    ) -> None:
        """Queue counter moves (``{"waiting": -3, "sent": 3}``) and note hand-overs."""
        key = self.keys.campaign(name)
        for where, amount in changes.items():
            if amount:
                pipe.hincrby(key, f"n:{where}", amount)
        if any(changes.values()):
            pipe.hset(key, "updated_at", _now_iso())
        if handed:
            now = time.time()
            pipe.hsetnx(key, "first_sent_at", now)
            pipe.hset(key, "last_sent_at", now)
            pipe.hincrby(key, "handed", handed)

    @translated("read campaign states")
    def states(self, names: Iterable[str]) -> dict[str, str]:
        """The stored state of each campaign (``running`` for one without a record)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for name in wanted:
                pipe.hget(self.keys.campaign(name), "state")
            found = pipe.execute()
        return {
            n: _text(s) if s is not None else "running" for n, s in zip(wanted, found, strict=True)
        }

    # -- reading and steering -------------------------------------------

    @translated("read a campaign")
    def get(self, name: str) -> CampaignRecord | None:
        """The campaign's record, or None for an unknown (or invalid) name."""
        try:
            name = cast(str, campaign_name(name))
        except ValidationError:
            return None
        if name is None:
            return None
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.campaign(name)))
        if not raw:
            return None
        return record_from_fields(name, raw, time.time())

    @translated("read a campaign's hand-overs")
    def handed_by_minute(
        self, name: str, minutes: int = 60, now: float | None = None
    ) -> list[tuple[int, int]]:
        """The last ``minutes`` minutes, oldest first: (unix minute, recipients handed over)."""
        last = int((time.time() if now is None else now) // 60)
        span = range(last - minutes + 1, last + 1)
        key = self.keys.campaign_minutes(name)
        values: list[Any] = self.redis.hmget(key, [str(minute) for minute in span])
        return [
            (minute, int(value) if value is not None else 0)
            for minute, value in zip(span, values, strict=True)
        ]

    @translated("list campaigns")
    def names(self, limit: int = 100) -> list[str]:
        """The most recently started campaigns first."""
        rows = cast(list[bytes], self.redis.zrevrange(self.keys.campaigns, 0, limit - 1))
        return [_text(row) for row in rows]

    def recent(self, limit: int = 100) -> list[CampaignRecord]:
        """The records of the most recently started campaigns, newest first."""
        records = (self.get(name) for name in self.names(limit))
        return [record for record in records if record is not None]

    def pause(self, name: str, reason: str = "manual") -> CampaignRecord:
        """Pause: no new call of the campaign starts; answers the record."""
        return self._change(name, "paused", reason)

    def resume(self, name: str) -> CampaignRecord:
        """Resume a paused campaign; ValidationError for a cancelled one."""
        return self._change(name, "running", "")

    def cancel(self, name: str) -> CampaignRecord:
        """Cancel: nothing not yet handed to Mailtrap will be."""
        return self._change(name, "cancelled", "")

    @translated("change a campaign's state")
    def _change(self, name: str, state: str, reason: str) -> CampaignRecord:
        name = _required_name(name)
        key = self.keys.campaign(name)
        old = _text(self._set_state(keys=[key], args=[state, reason, _now_iso()]))
        if old == "":
            raise ValidationError(f"no campaign named {name!r}", field="campaign")
        if old == "cancelled" and state == "running":
            raise ValidationError(f"campaign {name!r} was cancelled", field="campaign")
        record = self.get(name)
        assert record is not None
        return record

    # -- fed by tracking events -------------------------------------------

    @translated("pause a campaign")
    def auto_pause(self, names: Iterable[str]) -> list[str]:
        """Pause each running campaign whose bounce or complaint rate passed its threshold."""
        paused = []
        for name, state in self.states(names).items():
            record = self.get(name)
            # The stored state: a campaign with nothing left to send pauses too,
            # so that whatever joins it later waits for a person to look.
            if record is None or state != "running":
                continue
            why = auto_pause_reason(record["counts"], self.thresholds)
            if why is not None:
                self._set_state(keys=[self.keys.campaign(name)], args=["paused", why, _now_iso()])
                paused.append(name)
        return paused


def auto_pause_reason(counts: Mapping[str, int], settings: Settings) -> str | None:
    """Why a campaign with these counts must pause, or None (pure).

    Rates are over the recipients Mailtrap accepted; too few of them say
    nothing yet (``campaign_min_tracked``).
    """
    handed = sum(n for where, n in counts.items() if where not in _NOT_HANDED)
    if handed < max(settings.campaign_min_tracked, 1):
        return None
    bounced = sum(counts.get(where, 0) for where in BOUNCED)
    complained = sum(counts.get(where, 0) for where in COMPLAINED)
    if complained / handed > settings.campaign_complaint_rate:
        return (
            f"complaint rate {complained / handed:.2%} passed "
            f"{settings.campaign_complaint_rate:.2%} ({complained} of {handed})"
        )
    if bounced / handed > settings.campaign_bounce_rate:
        return (
            f"bounce rate {bounced / handed:.2%} passed "
            f"{settings.campaign_bounce_rate:.2%} ({bounced} of {handed})"
        )
    return None


def _required_name(name: object) -> str:
    checked = campaign_name(name)
    if checked is None:
        raise ValidationError("campaign name is required", field="campaign")
    return checked
