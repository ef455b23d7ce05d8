"""The outbox: sends waiting for a worker, as Redis streams read by a consumer group.

Each entry is an *envelope* (``envelope.py``): one part of a validated
message (rendered into its API call by the worker that sends it) and its
routing facts, with the send id, the part number, the send's group and the
attempt count. Work waits in two lanes. The transactional lane is
``{mq}:outbox`` for single sends, where a worker reads up to 500 at once and
combines them into one ``batch`` call, and ``{mq}:outbox:batch`` for
merge-data sends. The bulk lane has a stream per campaign (and Mailtrap
stream and kind), listed in ``{mq}:outbox:campaigns``; drains read the
transactional lane first and take the campaigns in turn, so a small campaign
queued behind a huge one does not wait for it to finish. Batch calls are
read one at a time so that several workers share a large campaign.

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
import math
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from mailqueue.core.envelope import Envelope
from mailqueue.core.routing import LANES, STREAMS, Lane, Stream
from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.keys import OUTBOX_GROUP, Keys

__all__ = ["Envelope", "LaneStats", "Outbox"]

# A stream's abandoned entries are looked for at most this often per process:
# a drain polling for transactional work must not autoclaim on every poll.
RECLAIM_CHECK_INTERVAL = 1.0
# Backlog samples live two hours: the dashboard shows the last one.
BACKLOG_MINUTES_KEPT = 2 * 3600
# How far into a stream's unread envelopes ``ahead_of`` looks for a send.
AHEAD_SCAN_LIMIT = 2000
# Tags of a paused campaign's held envelopes: their kind and Mailtrap stream,
# which name the stream they go back to. Members of the earlier format carry
# "S|" or "B|" (the transactional stream).
_HOLD_TAGS = {
    ("send", "transactional"): "ST|",
    ("send", "bulk"): "SB|",
    ("batch", "transactional"): "BT|",
    ("batch", "bulk"): "BB|",
}

# Move due retries back into one stream. KEYS: retry zset, stream, campaign
# registry, then sends' hashes of waiting envelopes. ARGV: 1 when the stream
# is a campaign's, now, then triples (zset member, part, index of its send's
# hash in KEYS), or (member, envelope, 0) for a member that is a whole
# envelope (earlier versions). A member another worker moved first is skipped.
_MOVE_DUE = lua_script("outbox_move_due")

# Put a paused campaign's envelopes back in their streams. KEYS: held list,
# campaign registry, then the campaign's streams for the tags ST, SB, BT, BB,
# then the transactional lane's single and batch streams (for members of the
# earlier format). ARGV: limit, now. Returns how many moved.
_RELEASE = lua_script("outbox_release")

# Forget a campaign's stream once nothing is left in it, neither unread nor
# pending. KEYS: stream, campaign registry. Returns 1 when it was retired.
_RETIRE = lua_script("outbox_retire")


@dataclass
class LaneStats:
    """Work waiting in one lane for one Mailtrap stream."""

    lane: Lane
    stream: Stream
    waiting: int = 0  # unread envelopes
    in_flight: int = 0  # read by a worker, not yet acknowledged
    oldest_seconds: float = 0.0  # age of the oldest envelope still in a stream
    campaigns: int = 0  # streams of the bulk lane that hold work
    # Envelopes of paused campaigns, set aside or still in their streams: they
    # wait for a resume, not for a worker, so they count in none of the above.
    paused: int = 0


class Outbox(RedisStore):
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
        super().__init__(client, keys, url=url)
        self.reclaim_idle_ms = int(reclaim_idle * 1000)
        self.ttl = ttl
        self._move_due = client.register_script(_MOVE_DUE)
        self._release = client.register_script(_RELEASE)
        self._retire = client.register_script(_RETIRE)
        self._group_ready = False
        self._reclaimed_at: dict[str, float] = {}

    @translated("create the outbox consumer group")
    def ensure_group(self) -> None:
        """Create the consumer group on the transactional lane's streams (once per process).

        A campaign's stream gets its group when it is first read.
        """
        if self._group_ready:
            return
        for stream in (self.keys.outbox, self.keys.outbox_batch):
            self._create_group(stream)
        self._group_ready = True

    def _create_group(self, stream: str) -> None:
        try:
            self.redis.xgroup_create(stream, OUTBOX_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- producer side --------------------------------------------------

    def stream_for(self, envelope: Envelope) -> str:
        """The stream an envelope waits in: its lane's, its campaign's, its kind's."""
        if envelope.lane == "transactional":
            return self.keys.outbox_batch if envelope.is_batch else self.keys.outbox
        return self.keys.campaign_queue(envelope.mail_stream, envelope.kind, envelope.lane_key)

    def add(self, pipe: redis.client.Pipeline, envelope: Envelope) -> None:
        self.add_many(pipe, [envelope])

    def add_many(self, pipe: redis.client.Pipeline, envelopes: Iterable[Envelope]) -> None:
        """Queue the commands putting ``envelopes`` in their streams."""
        self.add_encoded(pipe, [(self.stream_for(e), e.encode()) for e in envelopes])

    def add_encoded(self, pipe: redis.client.Pipeline, entries: Iterable[tuple[str, str]]) -> None:
        """Queue envelopes already encoded, as ``(stream_for(e), e.encode())`` (a spool's lines).

        Each campaign stream written is listed for the drains once, whatever
        the number of its entries.
        """
        streams = set()
        for stream, raw in entries:
            pipe.xadd(stream, {"e": raw})
            streams.add(stream)
        campaigns = streams - {self.keys.outbox, self.keys.outbox_batch}
        if campaigns:
            pipe.zadd(self.keys.outbox_campaigns, dict.fromkeys(campaigns, time.time()), nx=True)

    def schedule(self, pipe: redis.client.Pipeline, envelope: Envelope, due: float) -> None:
        """Queue the envelope to re-enter its stream at ``due`` (unix seconds).

        The sorted set names the part; its envelope waits in its send's hash,
        where steering finds a send's (or a campaign's) parts by id.
        """
        pipe.hset(self.keys.retry_parts(envelope.send_id), str(envelope.part), envelope.encode())
        pipe.zadd(self.keys.retry, {_part_name(envelope.send_id, envelope.part): due})
        if envelope.campaign:
            self._note_campaign_retry(pipe, envelope.campaign, envelope.send_id, due)

    def _note_campaign_retry(
        self, pipe: redis.client.Pipeline, campaign: str, send_id: str, due: float
    ) -> None:
        sends = self.keys.campaign_retries(campaign)
        pipe.sadd(sends, send_id)
        # Outlives the latest part it lists: NX sets a first expiry, GT only extends it.
        expiry = max(int(due - time.time()), 0) + self.ttl
        pipe.expire(sends, expiry, nx=True)
        pipe.expire(sends, expiry, gt=True)

    def schedule_send(
        self, pipe: redis.client.Pipeline, send_id: str, envelopes: Sequence[Envelope], due: float
    ) -> None:
        """Hold a new send's envelopes until ``due`` and list it with the sends scheduled.

        As ``schedule`` holds each of them, with one write of each kind for all its parts.
        """
        if not envelopes:
            return
        parts: dict[Any, str] = {str(e.part): e.encode() for e in envelopes}
        pipe.hset(self.keys.retry_parts(send_id), mapping=parts)
        pipe.zadd(self.keys.retry, {_part_name(send_id, e.part): due for e in envelopes})
        if envelopes[0].campaign:
            self._note_campaign_retry(pipe, envelopes[0].campaign, send_id, due)
        pipe.zadd(self.keys.scheduled, {send_id: due})
        # The list is of times to come: entries whose time has passed go.
        pipe.zremrangebyscore(self.keys.scheduled, "-inf", f"({time.time()}")

    def hold(self, pipe: redis.client.Pipeline, envelope: Envelope) -> None:
        """Park an envelope of a paused campaign until it is resumed or cancelled."""
        tag = _HOLD_TAGS[envelope.kind, envelope.mail_stream]
        held = self.keys.campaign_held(envelope.campaign)
        pipe.rpush(held, tag + envelope.encode())
        pipe.expire(held, self.ttl)

    @translated("put a campaign's held sends back")
    def release(self, campaign: str, chunk: int = 1000) -> int:
        """Put every parked envelope of ``campaign`` back in its stream; returns how many."""
        script_keys = [
            self.keys.campaign_held(campaign),
            self.keys.outbox_campaigns,
            *(
                self.keys.campaign_queue(stream, kind, campaign)
                for kind, stream in _HOLD_TAGS  # ST, SB, BT, BB, in the script's order
            ),
            self.keys.outbox,
            self.keys.outbox_batch,
        ]
        total = 0
        while True:
            moved = int(self._release(keys=script_keys, args=[chunk, time.time()]))
            total += moved
            if moved < chunk:
                return total

    @translated("look for a send's waiting parts")
    def waiting_parts(self, send_id: str) -> list[Envelope]:
        """The envelopes of ``send_id``'s parts waiting for a retry or their time, by part."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.retry_parts(send_id))
            raw: Any = pipe.execute()[0]
        if not raw:
            return []
        envelopes = sorted(
            (Envelope.decode(value) for value in raw.values()), key=lambda e: e.part
        )
        names = [_part_name(send_id, envelope.part) for envelope in envelopes]
        due: Any = self.redis.zmscore(self.keys.retry, names)
        # A part a worker has just moved back to its stream is no longer waiting here.
        return [envelope for envelope, score in zip(envelopes, due, strict=True) if score]

    def take_waiting(self, pipe: redis.client.Pipeline, envelope: Envelope) -> None:
        """Queue taking a waiting part (from ``waiting_parts``) out of the retry set."""
        pipe.zrem(self.keys.retry, _part_name(envelope.send_id, envelope.part))
        pipe.hdel(self.keys.retry_parts(envelope.send_id), str(envelope.part))

    @translated("reschedule sends")
    def move_waiting(self, send_ids: Sequence[str], due: float) -> int:
        """Give every waiting part of ``send_ids`` the due time ``due``; returns how many moved."""
        if not send_ids:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for send_id in send_ids:
                pipe.hkeys(self.keys.retry_parts(send_id))
            parts: list[Any] = pipe.execute()
        names = {
            _part_name(send_id, int(_text(part))): due
            for send_id, found in zip(send_ids, parts, strict=True)
            for part in found
        }
        if not names:
            return 0
        # XX: a part that left the set meanwhile is not put back.
        changed: Any = self.redis.zadd(self.keys.retry, names, xx=True, ch=True)
        return int(changed)

    @translated("look for a campaign's waiting sends")
    def campaign_waiting(self, campaign: str) -> list[str]:
        """The send ids of ``campaign`` that had parts waiting for a retry or their time."""
        members: Any = self.redis.smembers(self.keys.campaign_retries(campaign))
        return sorted(_text(member) for member in members)

    # -- worker side ----------------------------------------------------

    @translated("read the outbox")
    def read(self, consumer: str, stream: str, count: int) -> list[Envelope]:
        """Envelopes for ``consumer``: first those abandoned by dead workers, then new ones."""
        self.ensure_group()
        try:
            entries = self._entries(consumer, stream, count)
        except redis.ResponseError as exc:
            # A campaign's stream is deleted when it empties; one written since
            # has no group yet. Created at id 0, the group still sees every entry.
            if "NOGROUP" not in str(exc):
                raise
            self._create_group(stream)
            entries = self._entries(consumer, stream, count)
        envelopes = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending
                self.redis.xack(stream, OUTBOX_GROUP, entry_id)
                continue
            raw = fields.get(b"e") or fields.get("e")
            envelopes.append(Envelope.decode(cast(bytes, raw), _text(entry_id), stream))
        return envelopes

    def _entries(self, consumer: str, stream: str, count: int) -> list[Any]:
        entries: list[Any] = []
        now = time.monotonic()
        if now - self._reclaimed_at.get(stream, -math.inf) >= RECLAIM_CHECK_INTERVAL:
            claimed: Any = self.redis.xautoclaim(
                stream, OUTBOX_GROUP, consumer, self.reclaim_idle_ms, "0-0", count=count
            )
            entries = list(claimed[1]) if claimed else []
            # Only a check that found nothing waits for the interval: a backlog
            # of abandoned entries is taken over read after read.
            if len(entries) < count:
                self._reclaimed_at[stream] = now
        if len(entries) < count:
            fresh: Any = self.redis.xreadgroup(
                OUTBOX_GROUP, consumer, {stream: ">"}, count=count - len(entries)
            )
            for _, items in fresh or []:
                entries.extend(items)
        return entries

    @translated("list the campaigns waiting")
    def campaign_queues(self) -> list[str]:
        """The bulk lane's streams that may hold work, oldest campaign first."""
        names: Any = self.redis.zrange(self.keys.outbox_campaigns, 0, -1)
        return [_text(name) for name in names]

    @translated("retire a campaign's stream")
    def retire(self, stream: str) -> bool:
        """Forget a campaign's stream if it holds nothing; True when it was retired."""
        return bool(self._retire(keys=[stream, self.keys.outbox_campaigns]))

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
        """Put retries that are due back into their streams; returns how many moved."""
        due: Any = self.redis.zrangebyscore(
            self.keys.retry, "-inf", now if now is not None else time.time(), start=0, num=limit
        )
        if not due:
            return 0
        found = self._due_envelopes([_text(member) for member in due])
        by_stream: dict[str, _DueMoves] = {}
        for member, envelope, where in found:
            moves = by_stream.setdefault(self.stream_for(envelope), _DueMoves())
            moves.add(member, envelope, where)
        moved = 0
        for stream, moves in by_stream.items():
            campaign = "1" if self.keys.parse_campaign_queue(stream) else "0"
            moved += int(
                self._move_due(
                    keys=[self.keys.retry, stream, self.keys.outbox_campaigns, *moves.hashes],
                    args=[campaign, time.time(), *moves.args],
                )
            )
        return moved

    def _due_envelopes(self, members: Sequence[str]) -> list[tuple[str, Envelope, str | None]]:
        """``(member, envelope, its send's hash)`` of due members; None: the member is one."""
        named = [member for member in members if "{" not in member]
        with self.redis.pipeline(transaction=False) as pipe:
            for member in named:
                send_id, _, part = member.rpartition("|")
                pipe.hget(self.keys.retry_parts(send_id), part)
            stored = dict(zip(named, pipe.execute(), strict=True))
        found: list[tuple[str, Envelope, str | None]] = []
        for member in members:
            if member not in stored:  # a whole envelope, as earlier versions scheduled
                found.append((member, Envelope.decode(_strip_legacy_tag(member)), None))
            elif stored[member] is not None:
                parts = self.keys.retry_parts(member.rpartition("|")[0])
                found.append((member, Envelope.decode(stored[member]), parts))
            else:  # its envelope was taken meanwhile (steering): only the name is left
                self.redis.zrem(self.keys.retry, member)
        return found

    def streams(self) -> list[str]:
        """Every stream that may hold work: the transactional lane's, then the campaigns'."""
        return [self.keys.outbox, self.keys.outbox_batch, *self.campaign_queues()]

    @translated("count waiting envelopes")
    def waiting(self) -> int:
        """Envelopes in every stream that no worker has read yet.

        Acknowledged entries are deleted, so a stream holds exactly the pending
        entries and the unread ones. Pending entries are not counted: a live
        worker is on them, and those of a dead one are reclaimed on schedule.
        """
        return sum(unread for _, unread, _, _ in self._survey(self.streams()))

    @translated("note the backlog")
    def note_backlog(self, now: float | None = None) -> int:
        """Keep the backlog now as this minute's sample (the dashboard's last hour); returns it."""
        now = time.time() if now is None else now
        waiting = self.waiting()
        key = self.keys.backlog_minute(str(int(now // 60)))
        self.redis.set(key, waiting, ex=BACKLOG_MINUTES_KEPT)
        return waiting

    @translated("read the backlog")
    def backlog_by_minute(
        self, minutes: int = 60, now: float | None = None
    ) -> list[tuple[int, int | None]]:
        """The last ``minutes`` minutes, oldest first: (unix minute, backlog seen, None: none)."""
        last = int((time.time() if now is None else now) // 60)
        span = range(last - minutes + 1, last + 1)
        values: list[Any] = self.redis.mget([self.keys.backlog_minute(str(m)) for m in span])
        return [
            (minute, None if value is None else int(value))
            for minute, value in zip(span, values, strict=True)
        ]

    @translated("read the queue depth")
    def depths(self) -> dict[str, int]:
        """Entries in the transactional streams, the retry set and the dead-letter set."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.keys.outbox)
            pipe.xlen(self.keys.outbox_batch)
            pipe.zcard(self.keys.retry)
            pipe.zcard(self.keys.dead)
            counts = pipe.execute()
        return dict(zip(("outbox", "batch", "retry", "dead"), map(int, counts), strict=True))

    @translated("read the lanes' figures")
    def lane_stats(self, paused: Collection[str] = ()) -> list[LaneStats]:
        """Backlog, work in flight and the oldest envelope's age, per lane and Mailtrap stream.

        The envelopes of the ``paused`` campaigns count as ``paused`` only.
        """
        stats = {(lane, stream): LaneStats(lane, stream) for lane in LANES for stream in STREAMS}
        now_ms = time.time() * 1000
        for stream, unread, held, first_ms in self._survey(self.streams(), oldest=True):
            parsed = self.keys.parse_campaign_queue(stream)
            lane = "transactional" if parsed is None else "bulk"
            mail_stream = "transactional" if parsed is None else parsed[0]
            entry = stats.get((lane, mail_stream))  # type: ignore[arg-type]
            if entry is None:
                continue
            if parsed is not None and parsed[2] and parsed[2] in paused:
                entry.paused += unread + held
                continue
            entry.waiting += unread
            entry.in_flight += held
            if unread + held and first_ms is not None:
                entry.oldest_seconds = max(entry.oldest_seconds, (now_ms - first_ms) / 1000)
            if parsed is not None and unread + held:
                entry.campaigns += 1
        for name in paused:
            for (kind, mail_stream), count in self._held_counts(name).items():
                lane = "bulk" if kind else "transactional"
                found = stats.get((lane, mail_stream))  # type: ignore[arg-type]
                if found is not None:
                    found.paused += count
        return list(stats.values())

    def _held_counts(self, campaign: str, chunk: int = 1000) -> dict[tuple[bool, str], int]:
        """How many envelopes ``campaign`` has set aside, by (campaign lane?, Mailtrap stream)."""
        streams = {tag[:-1]: (True, mail_stream) for (_, mail_stream), tag in _HOLD_TAGS.items()}
        counts: dict[tuple[bool, str], int] = {}
        held = self.keys.campaign_held(campaign)
        start = 0
        while True:
            members = self.redis.lrange(held, start, start + chunk - 1)
            for member in members:
                tag = _text(member[:3]).partition("|")[0]
                # Members of the earlier format go back to the transactional lane.
                where = streams.get(tag, (False, "transactional"))
                counts[where] = counts.get(where, 0) + 1
            if len(members) < chunk:
                return counts
            start += chunk

    def _survey(
        self, streams: Sequence[str], *, oldest: bool = False
    ) -> list[tuple[str, int, int, float | None]]:
        """``(stream, unread, pending, first entry's time in ms)`` for each stream."""
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xpending(stream, OUTBOX_GROUP)
                if oldest:
                    pipe.xrange(stream, count=1)
            answers = pipe.execute(raise_on_error=False)
        step = 3 if oldest else 2
        rows = []
        for index, stream in enumerate(streams):
            length, pending = answers[index * step], answers[index * step + 1]
            if isinstance(length, Exception):
                raise length
            held = int(pending["pending"]) if isinstance(pending, dict) else 0
            first_ms = None
            if oldest:
                first = answers[index * step + 2]
                if isinstance(first, list) and first:
                    first_ms = float(_text(first[0][0]).partition("-")[0])
            rows.append((stream, max(int(length) - held, 0), held, first_ms))
        return rows

    @translated("read the oldest unacknowledged envelope")
    def next_reclaim_due(self) -> float | None:
        """When the oldest envelope read but not acknowledged becomes reclaimable (unix seconds).

        In the past when it already is: how long ago tells whether its wake-up was lost.
        """
        due = None
        for stream in self.streams():
            try:
                oldest: Any = self.redis.xpending_range(stream, OUTBOX_GROUP, "-", "+", 1)
            except redis.ResponseError:  # no group yet
                continue
            if oldest:
                idle = int(oldest[0]["time_since_delivered"])
                at = time.time() + (self.reclaim_idle_ms - idle) / 1000
                due = at if due is None else min(due, at)
        return due

    @translated("find a send among the waiting envelopes")
    def ahead_of(self, send_id: str, limit: int = AHEAD_SCAN_LIMIT) -> int | None:
        """How many unread envelopes wait before ``send_id``'s in its transactional stream.

        Reads the unread entries in order, at most ``limit``. None when the send
        is not among them: read by a worker already, held for later, in a
        campaign's stream, or further back than ``limit``.
        """
        for stream, last in self._unread_from((self.keys.outbox, self.keys.outbox_batch)):
            seen = 0
            start = "(" + last
            while seen < limit:
                page: Any = self.redis.xrange(stream, min=start, count=min(500, limit - seen))
                if not page:
                    break
                for _, fields in page:
                    raw = fields.get(b"e") or fields.get("e")
                    if raw is not None and _send_id_of(raw) == send_id:
                        return seen
                    seen += 1
                start = "(" + _text(page[-1][0])
        return None

    def _unread_from(self, streams: Sequence[str]) -> list[tuple[str, str]]:
        """``(stream, the consumer group's last delivered id)``: what follows is unread."""
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            answers = pipe.execute(raise_on_error=False)
        found = []
        for stream, groups in zip(streams, answers, strict=True):
            last = "0-0"
            for group in groups if isinstance(groups, list) else []:
                if _text(group.get("name", "")) == OUTBOX_GROUP:
                    last = _text(group.get("last-delivered-id") or "0-0")
            found.append((stream, last))
        return found

    @translated("read the oldest unread envelope")
    def unread_since(self) -> float | None:
        """When the oldest transactional envelope no worker has read yet was added (unix s)."""
        unread = self._unread_from([self.keys.outbox, self.keys.outbox_batch])
        with self.redis.pipeline(transaction=False) as pipe:
            for stream, last in unread:
                # Entries are deleted once acknowledged: after the group's last
                # delivered id there is only what no worker has read.
                pipe.xrange(stream, min="(" + last, count=1)
            firsts = pipe.execute(raise_on_error=False)
        times = [
            float(_text(first[0][0]).partition("-")[0]) / 1000
            for first in firsts
            if isinstance(first, list) and first
        ]
        return min(times, default=None)

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
            envelope.attempt, envelope.resend_at, envelope.last_error = 0, None, None
        return envelopes

    @translated("requeue dead letters")
    def add_all(self, envelopes: Sequence[Envelope]) -> None:
        """Put ``envelopes`` in their streams in one transaction (a dead letter's parts)."""
        with self.redis.pipeline(transaction=True) as pipe:
            for envelope in envelopes:
                self.add(pipe, envelope)
            pipe.execute()

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


class _DueMoves:
    """One stream's share of a ``move_due`` script call: its send hashes and arguments."""

    def __init__(self) -> None:
        self.hashes: list[str] = []
        self.args: list[str | int] = []

    def add(self, member: str, envelope: Envelope, parts: str | None) -> None:
        """Move ``member``: its envelope from ``parts`` (a send's hash), else the member itself."""
        if parts is None:
            self.args += [member, envelope.encode(), 0]
            return
        if parts not in self.hashes:
            self.hashes.append(parts)
        # KEYS: retry set, stream, registry, then the hashes (Lua counts from 1).
        self.args += [member, str(envelope.part), 3 + self.hashes.index(parts) + 1]


def _part_name(send_id: str, part: int) -> str:
    """A waiting part's member of the retry set (send ids never hold a ``|``)."""
    return f"{send_id}|{part}"


def _strip_legacy_tag(member: str) -> str:
    # Retries scheduled by earlier versions carry an "S|" or "B|" stream tag.
    return member[2:] if member[:2] in ("S|", "B|") else member


def _send_id_of(raw: Any) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    send_id = data.get("id") if isinstance(data, dict) else None
    return send_id if isinstance(send_id, str) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
