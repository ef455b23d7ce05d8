"""The outbox: sends waiting for a worker, as Redis streams read by a consumer group.

Each entry is an *envelope*: one API call the producer built, with the send
id, the part number and the attempt count. Single sends go to ``mq:outbox``,
where a worker reads up to 500 at once and combines them into one ``batch``
call; batch calls (merge-data sends) go to ``mq:outbox:batch`` and are read
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

from . import keys
from .payload import ApiCall

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

@dataclass
class Envelope:
    """One API call on its way: the send it belongs to, which part, which attempt."""

    send_id: str
    part: int
    call: ApiCall
    attempt: int = 0
    entry_id: str = field(default="", compare=False)
    stream: str = field(default=keys.OUTBOX, compare=False)

    def encode(self) -> str:
        return json.dumps(
            {
                "id": self.send_id,
                "part": self.part,
                "call": self.call.to_dict(),
                "attempt": self.attempt,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str | bytes, entry_id: str = "", stream: str = keys.OUTBOX) -> Envelope:
        data = json.loads(raw)
        return cls(
            send_id=data["id"],
            part=int(data["part"]),
            call=ApiCall.from_dict(data["call"]),
            attempt=int(data.get("attempt", 0)),
            entry_id=entry_id,
            stream=stream,
        )

    @property
    def target(self) -> str:
        return keys.OUTBOX_BATCH if self.call.is_batch else keys.OUTBOX


class Outbox:
    """Adds, reads, acknowledges, schedules and dead-letters envelopes."""

    def __init__(self, client: redis.Redis, *, reclaim_idle: float, ttl: int) -> None:
        self.redis = client
        self.reclaim_idle_ms = int(reclaim_idle * 1000)
        self.ttl = ttl
        self._move_due = client.register_script(_MOVE_DUE)
        self._group_ready = False

    def ensure_group(self) -> None:
        """Create the consumer group on both streams (once per process)."""
        if self._group_ready:
            return
        for stream in (keys.OUTBOX, keys.OUTBOX_BATCH):
            try:
                self.redis.xgroup_create(stream, keys.OUTBOX_GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    # -- producer side --------------------------------------------------

    def add(self, pipe: redis.client.Pipeline, envelope: Envelope) -> None:
        pipe.xadd(envelope.target, {"e": envelope.encode()})

    def schedule(self, pipe: redis.client.Pipeline, envelope: Envelope, due: float) -> None:
        """Queue the envelope to re-enter its stream at ``due`` (unix seconds)."""
        tag = "B|" if envelope.call.is_batch else "S|"
        pipe.zadd(keys.RETRY, {tag + envelope.encode(): due})

    # -- worker side ----------------------------------------------------

    def read(self, consumer: str, stream: str, count: int) -> list[Envelope]:
        """Envelopes for ``consumer``: first those abandoned by dead workers, then new ones."""
        self.ensure_group()
        claimed: Any = self.redis.xautoclaim(
            stream, keys.OUTBOX_GROUP, consumer, self.reclaim_idle_ms, "0-0", count=count
        )
        entries = list(claimed[1]) if claimed else []
        if len(entries) < count:
            fresh: Any = self.redis.xreadgroup(
                keys.OUTBOX_GROUP, consumer, {stream: ">"}, count=count - len(entries)
            )
            for _, items in fresh or []:
                entries.extend(items)
        envelopes = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending
                self.redis.xack(stream, keys.OUTBOX_GROUP, entry_id)
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
            pipe.xack(stream, keys.OUTBOX_GROUP, *ids)
            pipe.xdel(stream, *ids)

    def move_due(self, now: float | None = None, limit: int = 1000) -> int:
        return int(
            self._move_due(
                keys=[keys.RETRY, keys.OUTBOX, keys.OUTBOX_BATCH],
                args=[now if now is not None else time.time(), limit],
            )
        )

    def waiting(self) -> int:
        """Envelopes in both streams that no worker has read yet.

        Acknowledged entries are deleted, so a stream holds exactly the pending
        entries and the unread ones. Pending entries are not counted: a live
        worker is on them, and those of a dead one are reclaimed on schedule.
        """
        streams = (keys.OUTBOX, keys.OUTBOX_BATCH)
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xpending(stream, keys.OUTBOX_GROUP)
            answers = pipe.execute(raise_on_error=False)
        total = 0
        for length, pending in zip(answers[::2], answers[1::2], strict=True):
            if isinstance(length, Exception):
                raise length
            held = pending["pending"] if isinstance(pending, dict) else 0
            total += max(int(length) - int(held), 0)
        return total

    def next_reclaim_due(self) -> float | None:
        """When the oldest envelope read but not acknowledged becomes reclaimable (unix seconds)."""
        due = None
        for stream in (keys.OUTBOX, keys.OUTBOX_BATCH):
            try:
                oldest: Any = self.redis.xpending_range(stream, keys.OUTBOX_GROUP, "-", "+", 1)
            except redis.ResponseError:  # no group yet
                continue
            if oldest:
                idle = int(oldest[0]["time_since_delivered"])
                at = time.time() + max(self.reclaim_idle_ms - idle, 0) / 1000
                due = at if due is None else min(due, at)
        return due

    def next_retry_due(self) -> float | None:
        first: Any = self.redis.zrange(keys.RETRY, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # -- dead letters ---------------------------------------------------

    def bury(self, pipe: redis.client.Pipeline, envelope: Envelope, when: float) -> None:
        """Keep a failed envelope in the dead-letter set (for ``ttl`` seconds)."""
        key = keys.dead_letter(envelope.send_id)
        pipe.hset(key, str(envelope.part), envelope.encode())
        pipe.expire(key, self.ttl)
        pipe.zadd(keys.DEAD, {envelope.send_id: when})

    def dead_letters(self, limit: int = 100) -> list[tuple[str, float]]:
        """``(send_id, failed_at)`` pairs, oldest first."""
        rows: Any = self.redis.zrange(keys.DEAD, 0, limit - 1, withscores=True)
        return [(_text(member), float(score)) for member, score in rows]

    def exhume(self, send_id: str) -> list[Envelope]:
        """Remove a send from the dead-letter set and return its envelopes (attempts reset)."""
        key = keys.dead_letter(send_id)
        with self.redis.pipeline() as pipe:
            pipe.hgetall(key)
            pipe.delete(key)
            pipe.zrem(keys.DEAD, send_id)
            raw, _, _ = pipe.execute()
        envelopes = [Envelope.decode(value) for value in cast(dict[bytes, bytes], raw).values()]
        for envelope in envelopes:
            envelope.attempt = 0
        return envelopes

    def purge_dead(self, send_ids: Sequence[str] | None = None) -> int:
        """Forget dead letters (all of them when ``send_ids`` is None); returns how many."""
        if send_ids is None:
            send_ids = [send_id for send_id, _ in self.dead_letters(limit=1_000_000)]
        if not send_ids:
            return 0
        with self.redis.pipeline() as pipe:
            for send_id in send_ids:
                pipe.delete(keys.dead_letter(send_id))
            pipe.zrem(keys.DEAD, *send_ids)
            results = pipe.execute()
        return int(results[-1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
