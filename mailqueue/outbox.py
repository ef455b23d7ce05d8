"""The outbox: sends waiting for a worker, as Redis streams read by a consumer group.

Each entry is an *envelope*: one API call the producer built, with the send
id, the part number, the send's group and the attempt count. Single sends go
to ``{mq}:outbox``, where a worker reads up to 500 at once and combines them
into one ``batch`` call; batch calls (merge-data sends) go to
``{mq}:outbox:batch`` and are read
one at a time so that several workers share a large campaign.

Why streams rather than one Celery message per send: a consumer group
remembers what each worker read and has not acknowledged, so a worker killed
mid-call leaves its envelopes pending, and another worker takes them over with
XAUTOCLAIM once they have been idle for ``reclaim_idle`` seconds -- no waiting
for the broker's visibility timeout. And retries scheduled minutes ahead wait
in a sorted set, not in a Celery countdown held by a worker, which the Redis
transport would redeliver early once the visibility timeout passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from .keys import OUTBOX_GROUP, Keys
from .payload import ApiCall
from .redis_edge import translated
from .status import PartRef

__all__ = ["Envelope", "Outbox"]

# Move retries that are due back into their stream. KEYS: retry zset, single
# stream, batch stream. ARGV: now, limit. Returns how many moved.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  local stream = KEYS[2]
  if string.sub(raw, 1, 2) == 'B|' then stream = KEYS[3] end
  redis.call('XADD', stream, '*', 'e', string.sub(raw, 3))
  redis.call('ZREM', KEYS[1], raw)
end
return #due
"""

# Put a paused campaign's envelopes back in their streams. KEYS: held list,
# single stream, batch stream. ARGV: limit. Returns how many moved.
_RELEASE = """
local moved = 0
for i = 1, tonumber(ARGV[1]) do
  local raw = redis.call('LPOP', KEYS[1])
  if not raw then break end
  local stream = KEYS[2]
  if string.sub(raw, 1, 2) == 'B|' then stream = KEYS[3] end
  redis.call('XADD', stream, '*', 'e', string.sub(raw, 3))
  moved = moved + 1
end
return moved
"""

@dataclass
class Envelope:
    """One API call on its way: the send it belongs to, which part, which attempt."""

    send_id: str
    part: int
    call: ApiCall
    attempt: int = 0
    # The send's enqueue_many group: the status scripts count its states.
    group: str | None = None
    # The campaign it belongs to ("" for none) and when it stops being worth
    # sending (unix seconds): what a worker checks when it claims the part.
    campaign: str = ""
    expires_at: float | None = None
    # Mailtrap's sending stream ("transactional" or "bulk"): suppressions may
    # cover one stream only.
    mail_stream: str = "transactional"
    entry_id: str = field(default="", compare=False)
    stream: str = field(default="", compare=False)
    # What a worker sends, when suppressed recipients were taken out of
    # ``call`` (which stays whole: a retry or a hold queues it again), and
    # the recipients taken out. Never encoded.
    outgoing: ApiCall | None = field(default=None, compare=False)
    withheld: tuple[str, ...] = field(default=(), compare=False)

    @property
    def to_send(self) -> ApiCall:
        """The call a worker makes for this envelope."""
        return self.outgoing if self.outgoing is not None else self.call

    @property
    def flat_recipients(self) -> list[str]:
        """Every recipient of the call, in ``message_ids`` order."""
        return [address for request in self.call.recipients for address in request]

    def encode(self) -> str:
        data: dict[str, Any] = {
            "id": self.send_id,
            "part": self.part,
            "call": self.call.to_dict(),
            "attempt": self.attempt,
        }
        if self.group:
            data["group"] = self.group
        if self.campaign:
            data["campaign"] = self.campaign
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        if self.mail_stream != "transactional":
            data["mail_stream"] = self.mail_stream
        return json.dumps(data, separators=(",", ":"))

    @property
    def ref(self) -> PartRef:
        """The part this envelope carries, as the status store names it."""
        return PartRef(
            self.send_id,
            self.part,
            self.group,
            self.campaign,
            sum(len(request) for request in self.call.recipients),
            self.expires_at,
        )

    @classmethod
    def decode(cls, raw: str | bytes, entry_id: str = "", stream: str = "") -> Envelope:
        data = json.loads(raw)
        return cls(
            send_id=data["id"],
            part=int(data["part"]),
            call=ApiCall.from_dict(data["call"]),
            attempt=int(data.get("attempt", 0)),
            group=data.get("group") or None,
            campaign=str(data.get("campaign", "")),
            expires_at=float(data["expires_at"]) if data.get("expires_at") else None,
            mail_stream=str(data.get("mail_stream", "transactional")),
            entry_id=entry_id,
            stream=stream,
        )


class Outbox:
    """Adds, reads, acknowledges, schedules and dead-letters envelopes."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        reclaim_idle: float,
        ttl: int,
        url: str = "redis",
    ) -> None:
        self.redis = client
        self.keys = keys
        self.url = url  # named in errors
        self.reclaim_idle_ms = int(reclaim_idle * 1000)
        self.ttl = ttl
        self._move_due = client.register_script(_MOVE_DUE)
        self._release = client.register_script(_RELEASE)
        self._group_ready = False

    @translated("create the outbox consumer group")
    def ensure_group(self) -> None:
        """Create the consumer group on both streams (once per process)."""
        if self._group_ready:
            return
        for stream in (self.keys.outbox, self.keys.outbox_batch):
            try:
                self.redis.xgroup_create(stream, OUTBOX_GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    # -- producer side --------------------------------------------------

    def stream_for(self, envelope: Envelope) -> str:
        """The stream an envelope waits in: batch calls apart from single sends."""
        return self.keys.outbox_batch if envelope.call.is_batch else self.keys.outbox

    def add(self, pipe: redis.client.Pipeline, envelope: Envelope) -> None:
        pipe.xadd(self.stream_for(envelope), {"e": envelope.encode()})

    def schedule(self, pipe: redis.client.Pipeline, envelope: Envelope, due: float) -> None:
        """Queue the envelope to re-enter its stream at ``due`` (unix seconds)."""
        tag = "B|" if envelope.call.is_batch else "S|"
        pipe.zadd(self.keys.retry, {tag + envelope.encode(): due})

    def hold(self, pipe: redis.client.Pipeline, envelope: Envelope) -> None:
        """Park an envelope of a paused campaign until it is resumed or cancelled."""
        tag = "B|" if envelope.call.is_batch else "S|"
        held = self.keys.campaign_held(envelope.campaign)
        pipe.rpush(held, tag + envelope.encode())
        pipe.expire(held, self.ttl)

    @translated("put a campaign's held sends back")
    def release(self, campaign: str, chunk: int = 1000) -> int:
        """Put every parked envelope of ``campaign`` back in its stream; returns how many."""
        script_keys = [self.keys.campaign_held(campaign), self.keys.outbox, self.keys.outbox_batch]
        total = 0
        while True:
            moved = int(self._release(keys=script_keys, args=[chunk]))
            total += moved
            if moved < chunk:
                return total

    @translated("look for scheduled sends")
    def scheduled(self, match: str) -> list[tuple[str, float]]:
        """``(member, due)`` of waiting envelopes whose encoding contains ``match``."""
        rows = self.redis.zscan_iter(self.keys.retry, match=f"*{match}*", count=1000)
        return [(_text(member), float(score)) for member, score in rows]

    @translated("reschedule sends")
    def move_scheduled(self, members: Sequence[str], due: float) -> int:
        """Give waiting envelopes (members of ``scheduled``) a new due time."""
        if not members:
            return 0
        changed: Any = self.redis.zadd(
            self.keys.retry, dict.fromkeys(members, due), xx=True, ch=True
        )
        return int(changed)

    @staticmethod
    def decode_scheduled(member: str) -> Envelope:
        """The envelope of a member of ``scheduled``."""
        return Envelope.decode(member[2:])

    # -- worker side ----------------------------------------------------

    @translated("read the outbox")
    def read(self, consumer: str, stream: str, count: int) -> list[Envelope]:
        """Envelopes for ``consumer``: first those abandoned by dead workers, then new ones."""
        self.ensure_group()
        claimed: Any = self.redis.xautoclaim(
            stream, OUTBOX_GROUP, consumer, self.reclaim_idle_ms, "0-0", count=count
        )
        entries = list(claimed[1]) if claimed else []
        if len(entries) < count:
            fresh: Any = self.redis.xreadgroup(
                OUTBOX_GROUP, consumer, {stream: ">"}, count=count - len(entries)
            )
            for _, items in fresh or []:
                entries.extend(items)
        envelopes = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending
                self.redis.xack(stream, OUTBOX_GROUP, entry_id)
                continue
            raw = fields.get(b"e") or fields.get("e")
            envelopes.append(Envelope.decode(cast(bytes, raw), _text(entry_id), stream))
        return envelopes

    def ack(self, pipe: redis.client.Pipeline, envelopes: Iterable[Envelope]) -> None:
        by_stream: dict[str, list[str]] = {}
        for envelope in envelopes:
            if envelope.entry_id:
                by_stream.setdefault(envelope.stream, []).append(envelope.entry_id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, OUTBOX_GROUP, *ids)
            pipe.xdel(stream, *ids)

    @translated("move due retries")
    def move_due(self, now: float | None = None, limit: int = 1000) -> int:
        return int(
            self._move_due(
                keys=[self.keys.retry, self.keys.outbox, self.keys.outbox_batch],
                args=[now if now is not None else time.time(), limit],
            )
        )

    @translated("count waiting envelopes")
    def waiting(self) -> int:
        """Envelopes in both streams that no worker has read yet.

        Acknowledged entries are deleted, so a stream holds exactly the pending
        entries and the unread ones. Pending entries are not counted: a live
        worker is on them, and those of a dead one are reclaimed on schedule.
        """
        streams = (self.keys.outbox, self.keys.outbox_batch)
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xpending(stream, OUTBOX_GROUP)
            answers = pipe.execute(raise_on_error=False)
        total = 0
        for length, pending in zip(answers[::2], answers[1::2], strict=True):
            if isinstance(length, Exception):
                raise length
            held = pending["pending"] if isinstance(pending, dict) else 0
            total += max(int(length) - int(held), 0)
        return total

    @translated("read the backlog of each stream")
    def backlog(self) -> list[tuple[str, int, float | None]]:
        """Per stream: its name, envelopes not yet read, and when its oldest entry was added.

        The oldest entry may be one a worker is on; its age is how long the
        stream has held work (unix seconds from the entry id, None when empty).
        """
        streams = (self.keys.outbox, self.keys.outbox_batch)
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xpending(stream, OUTBOX_GROUP)
                pipe.xrange(stream, count=1)
            answers = pipe.execute(raise_on_error=False)
        rows: list[tuple[str, int, float | None]] = []
        for index, stream in enumerate(streams):
            length, pending, first = answers[3 * index : 3 * index + 3]
            if isinstance(length, Exception):
                raise length
            held = pending["pending"] if isinstance(pending, dict) else 0
            oldest = None
            if isinstance(first, list) and first:
                oldest = int(_text(first[0][0]).split("-")[0]) / 1000
            rows.append((stream, max(int(length) - int(held), 0), oldest))
        return rows

    @translated("read the oldest unacknowledged envelope")
    def next_reclaim_due(self) -> float | None:
        """When the oldest envelope read but not acknowledged becomes reclaimable (unix seconds)."""
        due = None
        for stream in (self.keys.outbox, self.keys.outbox_batch):
            try:
                oldest: Any = self.redis.xpending_range(stream, OUTBOX_GROUP, "-", "+", 1)
            except redis.ResponseError:  # no group yet
                continue
            if oldest:
                idle = int(oldest[0]["time_since_delivered"])
                at = time.time() + max(self.reclaim_idle_ms - idle, 0) / 1000
                due = at if due is None else min(due, at)
        return due

    @translated("read the next retry")
    def next_retry_due(self) -> float | None:
        first: Any = self.redis.zrange(self.keys.retry, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # -- dead letters ---------------------------------------------------

    def bury(self, pipe: redis.client.Pipeline, envelope: Envelope, when: float) -> None:
        """Keep a failed envelope in the dead-letter set (for ``ttl`` seconds)."""
        key = self.keys.dead_letter(envelope.send_id)
        pipe.hset(key, str(envelope.part), envelope.encode())
        pipe.expire(key, self.ttl)
        pipe.zadd(self.keys.dead, {envelope.send_id: when})

    @translated("list dead letters")
    def dead_letters(self, limit: int = 100) -> list[tuple[str, float]]:
        """``(send_id, failed_at)`` pairs, oldest first."""
        rows: Any = self.redis.zrange(self.keys.dead, 0, limit - 1, withscores=True)
        return [(_text(member), float(score)) for member, score in rows]

    @translated("take back a dead letter")
    def exhume(self, send_id: str) -> list[Envelope]:
        """Remove a send from the dead-letter set and return its envelopes (attempts reset)."""
        key = self.keys.dead_letter(send_id)
        with self.redis.pipeline() as pipe:
            pipe.hgetall(key)
            pipe.delete(key)
            pipe.zrem(self.keys.dead, send_id)
            raw, _, _ = pipe.execute()
        envelopes = [Envelope.decode(value) for value in cast(dict[bytes, bytes], raw).values()]
        for envelope in envelopes:
            envelope.attempt = 0
        return envelopes

    @translated("purge dead letters")
    def purge_dead(self, send_ids: Sequence[str] | None = None) -> int:
        """Forget dead letters (all of them when ``send_ids`` is None); returns how many."""
        if send_ids is None:
            send_ids = [send_id for send_id, _ in self.dead_letters(limit=1_000_000)]
        if not send_ids:
            return 0
        with self.redis.pipeline() as pipe:
            for send_id in send_ids:
                pipe.delete(self.keys.dead_letter(send_id))
            pipe.zrem(self.keys.dead, *send_ids)
            results = pipe.execute()
        return int(results[-1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
