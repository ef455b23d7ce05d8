"""StatusStore: every send's status record in Redis.

A send is split into *parts*, one per API call the producer built (a single
message is one part; a batch send of 1,200 recipients is three). A part is
claimed before its call and marked done after its answer, so a redelivered
part whose call already succeeded is never sent again. The send's state is
derived from its parts: ``sent`` when every part was accepted, ``failed`` when
none was, ``partially_sent`` otherwise.

Record layout (keys in ``mailqueue.store.keys``):
    mq:send:<id>  state, attempts, created_at, updated_at, parts, group,
                  error (JSON), possible_duplicates, next_attempt_at,
                  done:<part> (sent|partial|failed), lease:<part> (ms deadline)
    mq:rcpt:<id>  recipient -> JSON {"status", "message_id"}
and each Mailtrap message id's entry in the webhooks' index (``message_index.py``).
Neither ever holds the API token or a message body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from typing import Any, Literal, NamedTuple, cast

import redis

from mailqueue.core.envelope import PartRef
from mailqueue.records import GroupRecord, State, StatusRecord
from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.campaigns import bucket_of
from mailqueue.store.keys import Keys, safe_id
from mailqueue.store.message_index import MessageIndex

__all__ = [
    "Claim",
    "PartRef",
    "PartResult",
    "Recorded",
    "StatusStore",
    "became_final",
    "iso_of",
    "now_iso",
]

Claim = Literal[
    "go", "done", "busy", "doubt", "paused", "cancelled", "expired", "later", "lost", "lost_doubt"
]

# Claim parts of sends for one attempt. KEYS: n send hashes, then n group
# hashes, then n campaign records (a send in no group or campaign repeats its
# own hash there). ARGV: now (ISO), now (ms), lease (ms), ttl (s), reconcile
# (0/1), then three values per send: part, its recipient count, its expiry
# (ms, 0: none).
# Answers per send: 1 go, 0 already done, 2 another worker holds a live lease,
# 3 go, but an earlier call of the part may have reached Mailtrap (look it up),
# 4 its campaign is paused, 5 cancelled (the send or its campaign), 6 expired,
# 7 rescheduled for later (not_before), 8 a dead worker's lease ran out (its
# call counts as a try that ended unanswered), 9 the same, to be looked up.
# Steering (4 to 7) applies only to a part no worker has started: one with a
# lease left behind may be in Mailtrap's hands already, so it goes ahead.
# A lease left behind by a worker that died mid-call means that call may have
# reached Mailtrap: when reconciling, the part is marked doubtful since the
# lease began (began:<part> -> doubt:<part>, ms); otherwise it is counted as a
# possible duplicate.
# ``attempts`` counts the claims that start a call (answer 1); the call after a
# look-up is counted by the worker that makes it. ``lost:<part>`` counts the
# dead workers' calls since the part was last put off (its envelope, queued
# again then, carries the count on): a part that kills every worker runs out
# of tries too.
# A campaign counts a claimed part's recipients as ``sending`` until recorded.
_CLAIM = lua_script("status_claim")

# Record the outcomes of parts, in order, as one write each. KEYS, seven a
# part: send hash, recipients hash, group hash, campaign record (the send hash
# again for none), the minute's final outcomes by state, the group's sends
# that ended failed or partially_sent (the send hash again for none), the
# campaign's recipients handed to Mailtrap per minute (the send hash again for
# none). ARGV: now (ISO), ttl, now (unix seconds), how long a minute's counts
# live (s), then per part: part, outcome (sent|partial|failed|cancelled|
# expired), error JSON or "", campaign moves (JSON {where: amount}, applied
# with the outcome, exactly once), recipients handed to Mailtrap, the send
# id, the number of recipient/value pairs, and those pairs.
# Answers two values a part: the send's state after the update, and 1 when
# this write made the send final (its last part ended), else 0: exactly one
# write per final outcome answers 1, whoever makes it (a retry, a look-up in
# Email Logs, a worker taking over from a dead one), so its writer alone tells
# the outcome hooks. A part already done answers 0.
# A send is sent when every part was accepted, partially_sent when some
# recipients went out, and otherwise cancelled, expired or failed.
_RECORD = lua_script("status_record")

# A part's attempt failed transiently and will be retried later, or was
# withheld before its call (its campaign was paused meanwhile). KEYS: send
# hash, group hash, campaign record (the send hash again for none), the
# minute's state counts. ARGV:
# part, now, error JSON ("" keeps the last one), next attempt (ISO, "" for
# none), maybe delivered (0/1), recipient count, what the part waits for
# ("retry" or "look-up"; "": it was withheld and waits unrecorded), tries
# left ("" for unknown), how long a minute's counts live (s). Its recipients
# wait again in the campaign.
_RETRY = lua_script("status_retry")

# Cancel a send that has not been handed to Mailtrap. KEYS: send hash, group
# hash (the send hash again for none). ARGV: now (ISO). Answers the state it
# had; only queued and retrying change.
_CANCEL = lua_script("status_cancel")

# Put a dead-lettered part back in play. KEYS: send hash, group hash,
# campaign record (the send hash again for none). ARGV: part, now, recipient
# count.
_REVIVE = lua_script("status_revive")


# Per-minute state counts live two hours: the dashboard shows the last one.
STATE_MINUTES_KEPT = 2 * 3600
# An enqueue renews its minute's expiry at most this often (seconds) in a
# process, not with every message: one command fewer a message.
MINUTE_EXPIRY_EVERY = 5.0


def now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_of(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC (milliseconds kept only when there are some)."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


@dataclass(frozen=True)
class PartResult:
    """One part's outcome: per-recipient message ids, and an error when any failed.

    ``withheld`` recipients were never handed to Mailtrap and read
    ``withheld_as`` (``suppressed``, ``cancelled``, ``expired``). A campaign
    counts the part's recipients out of ``counted_from``.
    """

    outcome: Literal["sent", "partial", "failed", "cancelled", "expired"]
    recipients: Mapping[str, str | None]  # recipient -> message id (None: failed)
    error: Mapping[str, Any] | None = None
    withheld: tuple[str, ...] = ()
    withheld_as: str = "suppressed"
    counted_from: str = "sending"


class Recorded(NamedTuple):
    """A part's outcome queued on a pipeline: where its answer is in the pipeline's results."""

    send_id: str
    position: int
    nth: int = 0  # its place among the parts that answer shares

    def became_final(self, results: Sequence[Any]) -> bool:
        """Whether this write, once executed, ended the send's last part."""
        answer = results[self.position]
        return int(answer[2 * self.nth + 1]) == 1


def became_final(recorded: Sequence[Recorded], results: Sequence[Any]) -> list[str]:
    """The sends that writes of ``recorded`` made final, from their pipeline's ``results``."""
    return [r.send_id for r in recorded if r.became_final(results)]


_CLAIMS: Mapping[int, Claim] = {
    1: "go",
    0: "done",
    2: "busy",
    3: "doubt",
    4: "paused",
    5: "cancelled",
    6: "expired",
    7: "later",
    8: "lost",
    9: "lost_doubt",
}


class StatusStore(RedisStore):
    """Reads and writes status records; one instance per process is enough.

    ``ttl`` is how long a record lives (seconds); ``message_index`` is where
    the message ids of accepted recipients are noted for tracking events.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        ttl: int,
        message_index: MessageIndex,
        url: str = "redis",
    ) -> None:
        super().__init__(client, keys, url=url)
        self.ttl = max(int(ttl), 1)
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._retry = client.register_script(_RETRY)
        self._revive = client.register_script(_REVIVE)
        self._cancel = client.register_script(_CANCEL)
        self.message_index = message_index
        # The minute whose counts this process last gave their expiry, and when.
        self._minute_expiry = (-1, 0.0)

    # -- producer side --------------------------------------------------

    def create(
        self,
        pipe: redis.client.Pipeline,
        send_id: str,
        *,
        parts: int,
        created_at: str,
        group: str | None = None,
        campaign: str | None = None,
        send_at: float | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Queue the commands creating a ``queued`` record on ``pipe``."""
        key = self.keys.send(send_id)
        fields: dict[Any, str | int] = {
            "state": "queued",
            "attempts": 0,
            "created_at": created_at,
            "updated_at": created_at,
            "parts": parts,
        }
        if group:
            fields["group"] = group
            pipe.hincrby(self.keys.group(group), "queued", 1)
            pipe.expire(self.keys.group(group), self.ttl)
        if campaign:
            fields["campaign"] = campaign
        if send_at is not None:
            fields["send_at"] = iso_of(send_at)
        if expires_at is not None:
            fields["expires_at"] = iso_of(expires_at)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl)
        number = _minute()
        minute = self.keys.state_minute(str(number))
        pipe.hincrby(minute, "queued", 1)
        last, at = self._minute_expiry
        now = time.monotonic()
        if number != last or now - at >= MINUTE_EXPIRY_EVERY:
            self._minute_expiry = (number, now)
            pipe.expire(minute, STATE_MINUTES_KEPT)

    def forget_minute_expiry(self) -> None:
        """An enqueue failed: its writes may not have landed, the minute's expiry among them."""
        self._minute_expiry = (-1, 0.0)

    @translated("record a refused send")
    def create_rejected(self, send_id: str, error: Mapping[str, Any]) -> bool:
        """Record a send refused before it was queued (a message that failed validation).

        True when this call made the record (it is then final), False when one was there.
        """
        stamp = now_iso()
        key = self.keys.send(send_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "created_at", stamp)
            pipe.hset(
                key,
                mapping={
                    "state": "failed",
                    "attempts": 0,
                    "updated_at": stamp,
                    "parts": 1,
                    "error": json.dumps(error),
                },
            )
            pipe.expire(key, self.ttl)
            created = pipe.execute()[0]
        return bool(created)

    def first_send(self, idempotency_key: str, send_id: str) -> str | None:
        """Note ``send_id`` as the send of ``idempotency_key``; the earlier one if it had one.

        Redis errors pass: the producer translates them (and forgets a key it wrote).
        """
        first = self.redis.set(
            self.keys.idempotency(idempotency_key), send_id, nx=True, get=True, ex=self.ttl
        )
        if first is None:
            return None
        return first.decode() if isinstance(first, bytes) else str(first)

    def forget_first_send(self, idempotency_key: str, send_id: str) -> None:
        """Forget ``idempotency_key`` if it still names ``send_id`` (an enqueue that failed)."""
        key = self.keys.idempotency(idempotency_key)
        if self.redis.get(key) == send_id.encode():
            self.redis.delete(key)

    def queued_parts(self, send_id: str) -> tuple[int | None, int | None]:
        """A send's parts and how many of them are in the outbox (None: not counted).

        Only a send queued in several transactions (``chunked_send.py``) counts them.
        """
        fields = ["parts", "enqueued"]
        known, queued = cast(list[Any], self.redis.hmget(self.keys.send(send_id), fields))
        return (
            int(known) if known is not None else None,
            int(queued) if queued is not None else None,
        )

    def note_queued_parts(self, pipe: redis.client.Pipeline, send_id: str, queued: int) -> None:
        """Count in the record the parts in the outbox (a send queued in several transactions)."""
        pipe.hset(self.keys.send(send_id), "enqueued", queued)

    # -- worker side ----------------------------------------------------

    @translated("claim parts for sending")
    def claim(
        self, parts: Sequence[PartRef], lease_seconds: float, *, reconcile: bool = False
    ) -> list[Claim]:
        """Claim parts for one attempt; one answer per part, in order.

        With ``reconcile``, a part whose earlier call may have reached Mailtrap
        (``mark_doubtful``) answers ``"doubt"``. A part whose lease a dead worker
        left behind answers ``"lost"`` (``"lost_doubt"`` with ``reconcile``). A
        part of a paused campaign answers ``"paused"``; of a cancelled send or
        campaign ``"cancelled"``; past its expiry ``"expired"``; of a send
        rescheduled for later ``"later"`` (see ``_CLAIM``).
        """
        if not parts:
            return []
        now_ms = int(time.time() * 1000)
        args: list[Any] = [now_iso(), now_ms, int(lease_seconds * 1000), self.ttl]
        args.append(1 if reconcile else 0)
        for p in parts:
            expires = int(p.expires_at * 1000) if p.expires_at is not None else 0
            args += [p.part, p.recipients, expires]
        answers = self._claim(
            keys=[self.keys.send(p.send_id) for p in parts]
            + [self._group(p) for p in parts]
            + [self._campaign(p) for p in parts],
            args=args,
        )
        return [_CLAIMS[int(answer)] for answer in answers]

    # -- unknown outcomes (see reconcile.py) ------------------------------

    def mark_doubtful(
        self, pipe: redis.client.Pipeline, send_id: str, part: int, since: float
    ) -> None:
        """Queue marking a part whose call, begun at ``since`` (unix s), may have reached Mailtrap.

        The earliest such call is kept: a look-up searches from it on.
        """
        pipe.hsetnx(self.keys.send(send_id), f"doubt:{part}", int(since * 1000))
        self.note_doubtful(pipe, send_id)

    def note_doubtful(self, pipe: redis.client.Pipeline, send_id: str) -> None:
        """Queue listing a send among those an operator may want to reconcile."""
        pipe.zadd(self.keys.doubtful, {send_id: time.time()})

    @translated("note doubtful sends")
    def list_doubtful(self, send_ids: Sequence[str]) -> None:
        """List sends among those an operator may want to reconcile (``note_doubtful``)."""
        if send_ids:
            self.redis.zadd(self.keys.doubtful, dict.fromkeys(send_ids, time.time()))

    @translated("list doubtful sends")
    def doubtful_sends(self) -> list[str]:
        """Sends listed by ``note_doubtful`` within the status TTL, oldest first."""
        self.redis.zremrangebyscore(self.keys.doubtful, "-inf", time.time() - self.ttl)
        return [_text(member) for member in self.redis.zrange(self.keys.doubtful, 0, -1)]

    @translated("record message ids found in Email Logs")
    def add_found(
        self, send_id: str, found: Mapping[str, str], confirmed_duplicates: int
    ) -> None:
        """Record message ids found in Email Logs for recipients that had none.

        Only a recipient with no message id yet is changed: it reads ``queued``
        with the id, and webhook events for that id find the send.
        """
        current = self.redis.hgetall(self.keys.recipients(send_id))
        with self.redis.pipeline(transaction=True) as pipe:
            for recipient, message_id in found.items():
                raw = current.get(recipient.encode())
                entry = json.loads(raw) if raw else {}
                if entry.get("message_id") or not safe_id(message_id):
                    continue
                value = json.dumps({"status": "queued", "message_id": message_id})
                pipe.hset(self.keys.recipients(send_id), recipient, value)
                self.message_index.add(pipe, message_id, send_id, [recipient])
            pipe.hset(self.keys.send(send_id), "confirmed_duplicates", confirmed_duplicates)
            pipe.execute()

    @translated("read doubtful parts")
    def doubts(self, parts: Sequence[tuple[str, int]]) -> list[tuple[float | None, int]]:
        """For each part: since when its outcome is unknown (unix s, None: it is not) and
        how many look-ups found nothing so far."""
        with self.redis.pipeline(transaction=False) as pipe:
            for send_id, part in parts:
                pipe.hmget(self.keys.send(send_id), [f"doubt:{part}", f"looks:{part}"])
            rows = pipe.execute()
        return [
            (None if since is None else int(since) / 1000, int(looks or 0)) for since, looks in rows
        ]

    @translated("read dead workers' calls")
    def lost_calls(self, parts: Sequence[tuple[str, int]]) -> list[int]:
        """For each part: calls dead workers left unanswered since it was last put off."""
        with self.redis.pipeline(transaction=False) as pipe:
            for send_id, part in parts:
                pipe.hget(self.keys.send(send_id), f"lost:{part}")
            rows = pipe.execute()
        return [int(value or 0) for value in rows]

    def note_look(self, pipe: redis.client.Pipeline, send_id: str, part: int) -> None:
        """Queue counting one look-up of a part that found nothing."""
        pipe.hincrby(self.keys.send(send_id), f"looks:{part}", 1)

    def forget_looks(self, pipe: redis.client.Pipeline, send_id: str, part: int) -> None:
        """Queue starting a part's look-ups afresh: it is sent again, and its next lost
        answer gets as many looks as its first."""
        pipe.hdel(self.keys.send(send_id), f"looks:{part}")

    def count(self, pipe: redis.client.Pipeline, send_id: str, name: str, amount: int = 1) -> None:
        """Queue adding ``amount`` to a counter of the record (``reconciled``, ...)."""
        pipe.hincrby(self.keys.send(send_id), name, amount)

    def record(
        self,
        pipe: redis.client.Pipeline,
        ref: PartRef,
        result: PartResult,
        counted: Sequence[str] = (),
    ) -> Recorded:
        """Queue the commands recording a finished part (and its message-id index) on ``pipe``.

        For a part of a campaign, each address of ``counted`` (the part's
        recipients as the claim counted them, duplicates included) moves from
        ``result.counted_from`` to where the result puts it. The answer tells,
        once ``pipe`` has executed, whether this write made the send final
        (``became_final``).
        """
        return self.record_all(pipe, [(ref, result, counted)])[0]

    def record_all(
        self,
        pipe: redis.client.Pipeline,
        parts: Sequence[tuple[PartRef, PartResult, Sequence[str]]],
    ) -> list[Recorded]:
        """Queue recording finished parts, in order, as ``record`` does each.

        One script call for them all, and one for their message ids: a
        coalesced call ends hundreds of lone sends, and a script call costs
        Redis more than the writes of one part.
        """
        if not parts:
            return []
        now = time.time()
        minute = self.keys.state_minute(str(_minute(now)))
        script_keys: list[str] = []
        args: list[Any] = [now_iso(), self.ttl, now, STATE_MINUTES_KEPT]
        indexed: list[tuple[str, str, list[str]]] = []
        for ref, result, counted in parts:
            script_keys += self._record_keys(ref, minute)
            args += self._record_args(ref, result, counted, indexed)
        position = len(pipe)
        self._record(keys=script_keys, args=args, client=pipe)
        self.message_index.add_many(pipe, indexed, now)
        return [Recorded(ref.send_id, position, i) for i, (ref, _, _) in enumerate(parts)]

    def _record_keys(self, ref: PartRef, minute: str) -> list[str]:
        own = self.keys.send(ref.send_id)
        return [
            own,
            self.keys.recipients(ref.send_id),
            self._group(ref),
            self._campaign(ref),
            minute,
            self.keys.group_failed(ref.group) if ref.group else own,
            self.keys.campaign_minutes(ref.campaign) if ref.campaign else own,
        ]

    def _record_args(
        self,
        ref: PartRef,
        result: PartResult,
        counted: Sequence[str],
        indexed: list[tuple[str, str, list[str]]],
    ) -> list[Any]:
        """One part's arguments of ``_RECORD``; its message ids are added to ``indexed``."""
        values: list[str] = []
        by_message: dict[str, list[str]] = {}
        statuses: dict[str, str] = {}
        for recipient, message_id in result.recipients.items():
            # A send Mailtrap accepted is queued even when its answer lacked an id.
            status = "queued" if message_id is not None or result.outcome == "sent" else "failed"
            values += [recipient, _recipient_json(status, message_id)]
            statuses[recipient] = status
            if message_id and safe_id(message_id):
                by_message.setdefault(message_id, []).append(recipient)
        for recipient in result.withheld:
            values += [recipient, _recipient_json(result.withheld_as, None)]
            statuses[recipient] = result.withheld_as
        moves: dict[str, int] = {}
        handed = 0
        for address in counted if ref.campaign else ():
            where = bucket_of(statuses.get(address, "failed"))
            moves[where] = moves.get(where, 0) + 1
            handed += where == "sent"
        if moves:
            moves[result.counted_from] = moves.get(result.counted_from, 0) - len(counted)
        indexed += [(ref.send_id, message_id, found) for message_id, found in by_message.items()]
        return [
            ref.part,
            result.outcome,
            json.dumps(result.error) if result.error else "",
            json.dumps(moves, separators=(",", ":")),
            handed,
            ref.send_id,
            len(values) // 2,
            *values,
        ]

    def finish_unsent(
        self,
        pipe: redis.client.Pipeline,
        ref: PartRef,
        recipients: Sequence[str],
        outcome: Literal["cancelled", "expired"],
    ) -> Recorded:
        """Queue the commands ending a part that was never handed to Mailtrap."""
        result = PartResult(
            outcome,
            {},
            withheld=tuple(recipients),
            withheld_as=outcome,
            counted_from="waiting",
        )
        return self.record(pipe, ref, result, recipients)

    def mark_retrying(
        self,
        pipe: redis.client.Pipeline,
        ref: PartRef,
        error: Mapping[str, Any] | None,
        next_attempt_at: float | None,
        maybe_delivered: bool,
        *,
        waiting_for: Literal["retry", "look-up"] | None = None,
        tries_left: int | None = None,
    ) -> None:
        """Queue the commands marking a part as waiting again.

        It reads ``retrying`` when it waits for something (``waiting_for``:
        a ``retry``, or an Email Logs ``look-up``), ``queued`` when it was only
        held back. An ``error`` of None keeps the last one recorded.
        ``waiting_for`` defaults to ``retry`` when an error is given.
        """
        if waiting_for is None and error:
            waiting_for = "retry"
        when = ""
        if next_attempt_at is not None:
            moment = datetime.fromtimestamp(next_attempt_at, timezone.utc)
            when = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
        self._retry(
            keys=[
                self.keys.send(ref.send_id),
                self._group(ref),
                self._campaign(ref),
                self.keys.state_minute(str(_minute())),
            ],
            args=[
                ref.part,
                now_iso(),
                json.dumps(error) if error else "",
                when,
                1 if maybe_delivered else 0,
                ref.recipients,
                waiting_for or "",
                "" if tries_left is None else max(tries_left, 0),
                STATE_MINUTES_KEPT,
            ],
            client=pipe,
        )

    @translated("read when a send may go")
    def not_before(self, send_id: str) -> float | None:
        """When a rescheduled send may go (unix seconds), or None."""
        raw = self.redis.hget(self.keys.send(send_id), "not_before")
        return int(_text(raw)) / 1000 if raw is not None else None

    @translated("cancel a send")
    def cancel(self, send_id: str) -> str:
        """Mark a queued or retrying send ``cancelled``; answers the state it had ('' unknown)."""
        group = self.redis.hget(self.keys.send(send_id), "group")
        ref = PartRef(send_id, 0, _text(group) if group is not None else None)
        script_keys = [self.keys.send(send_id), self._group(ref)]
        return _text(self._cancel(keys=script_keys, args=[now_iso()]))

    @translated("revive a dead-lettered part")
    def revive(self, ref: PartRef) -> bool:
        """Undo a failed part so that it can be sent again (dead-letter requeue)."""
        script_keys = [self.keys.send(ref.send_id), self._group(ref), self._campaign(ref)]
        return bool(self._revive(keys=script_keys, args=[ref.part, now_iso(), ref.recipients]))

    def count_duplicates(self, pipe: redis.client.Pipeline, send_id: str, amount: int) -> None:
        """Queue counting ``amount`` more possible duplicates on a send."""
        pipe.hincrby(self.keys.send(send_id), "possible_duplicates", amount)

    def _group(self, ref: PartRef) -> str:
        # The scripts take a send in no group's own hash in place of a group hash.
        return self.keys.group(ref.group) if ref.group else self.keys.send(ref.send_id)

    def _campaign(self, ref: PartRef) -> str:
        # As for groups: a send in no campaign's own hash stands for none.
        return self.keys.campaign(ref.campaign) if ref.campaign else self.keys.send(ref.send_id)

    # -- reading --------------------------------------------------------

    @translated("read a status record")
    def get(self, send_id: str) -> StatusRecord | None:
        """The status record of DESIGN.md, or None for an unknown (or expired) id."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.send(send_id))
            pipe.hgetall(self.keys.recipients(send_id))
            pipe.lrange(self.keys.events(send_id), 0, -1)
            raw, rcpts, events = pipe.execute()
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        record: StatusRecord = {
            "id": send_id,
            "state": cast(State, fields.get("state", "queued")),
            "attempts": int(fields.get("attempts", 0)),
            "created_at": fields.get("created_at"),
            "updated_at": fields.get("updated_at"),
            "error": json.loads(fields["error"]) if fields.get("error") else None,
            "recipients": {
                _text(k): json.loads(v) for k, v in sorted(rcpts.items(), key=lambda kv: kv[0])
            },
            "parts": int(fields.get("parts", 1)),
            "possible_duplicates": int(fields.get("possible_duplicates", 0)),
            # Requests found in Mailtrap's Email Logs after a lost answer, not sent again.
            "reconciled": int(fields.get("reconciled", 0)),
            # Look-ups that could not be made (logs unreachable, token refused):
            # the part was sent again and counted in possible_duplicates.
            "reconcile_fallbacks": int(fields.get("reconcile_fallbacks", 0)),
        }
        if "confirmed_duplicates" in fields:
            # Set by ``mailqueue reconcile``: messages Email Logs show sent more than once.
            record["confirmed_duplicates"] = int(fields["confirmed_duplicates"])
        if record["state"] == "queued" and fields.get("next_attempt_at"):
            # Held back by the volume caps: when it may go.
            record["next_attempt_at"] = fields["next_attempt_at"]
        if record["state"] == "retrying":
            if fields.get("next_attempt_at"):
                record["next_attempt_at"] = fields["next_attempt_at"]
            # What it waits for ("retry", or an Email Logs "look-up" after a
            # lost answer) and how many more calls its retry budget allows.
            if fields.get("waiting_for"):
                record["waiting_for"] = fields["waiting_for"]
            if fields.get("tries_left"):
                record["tries_left"] = int(fields["tries_left"])
        if fields.get("group"):
            record["group"] = fields["group"]
        if fields.get("campaign"):
            record["campaign"] = fields["campaign"]
        if fields.get("send_at"):
            record["send_at"] = fields["send_at"]
        if fields.get("expires_at"):
            record["expires_at"] = fields["expires_at"]
        if events:
            record["events"] = [json.loads(event) for event in events]
        return record

    @translated("read a send's state")
    def state(self, send_id: str) -> str | None:
        """Just the state, in one round trip."""
        value = self.redis.hget(self.keys.send(send_id), "state")
        return _text(value) if value is not None else None

    @translated("read a group's progress")
    def group_counts(self, group_id: str) -> GroupRecord:
        """Per-state counts of the sends of one ``enqueue_many`` call (states at 0 left out)."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.group(group_id)))
        return cast(GroupRecord, {_text(k): int(v) for k, v in raw.items() if int(v)})

    @translated("read a group's failures")
    def group_failures(self, group_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A group's sends that ended failed or partially_sent, first first.

        Each as ``{"id", "state", "error"}`` (the error as recorded, or None); a
        send requeued since it failed is left out, its state having moved on.
        """
        end = -1 if limit is None else max(limit, 1) - 1
        found = self.redis.zrange(self.keys.group_failed(group_id), 0, end)
        send_ids = [_text(raw) for raw in found]
        with self.redis.pipeline(transaction=False) as pipe:
            for send_id in send_ids:
                pipe.hmget(self.keys.send(send_id), "state", "error")
            fields = pipe.execute()
        failures = []
        for send_id, (state, error) in zip(send_ids, fields, strict=True):
            if state is None or _text(state) not in ("failed", "partially_sent"):
                continue
            failures.append(
                {
                    "id": send_id,
                    "state": _text(state),
                    "error": json.loads(error) if error is not None else None,
                }
            )
        return failures

    @translated("read a send's recipients")
    def recipient_counts(self, send_id: str) -> dict[str, int]:
        """Per-status counts of one send's recipients (a campaign's progress)."""
        counts: dict[str, int] = {}
        for _, value in self.redis.hscan_iter(self.keys.recipients(send_id), count=1000):
            status = json.loads(value)["status"]
            counts[status] = counts.get(status, 0) + 1
        return counts

    @translated("read state counts")
    def states_by_minute(
        self, minutes: int = 60, now: float | None = None
    ) -> list[tuple[int, dict[str, int]]]:
        """The last ``minutes`` minutes, oldest first: (unix minute, {state: sends}).

        Counted as sends change state: ``queued`` when created, ``retrying``
        when a retry is scheduled, and the final state when the send ends.
        """
        last = _minute(now)
        span = range(last - minutes + 1, last + 1)
        with self.redis.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(self.keys.state_minute(str(minute)))
            rows = pipe.execute()
        return [
            (minute * 60, {_text(k): int(v) for k, v in row.items()})
            for minute, row in zip(span, rows, strict=True)
        ]

    @translated("count a statistic")
    def increment_stat(self, name: str, amount: int = 1) -> None:
        self.redis.hincrby(self.keys.stats, name, amount)

    @translated("read statistics")
    def stats(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.stats))
        return {_text(k): int(v) for k, v in raw.items()}

    # -- steering's writes ----------------------------------------------

    @translated("reschedule a send")
    def hold_until(self, send_id: str, due: float) -> None:
        """Record that ``send_id`` may go no sooner than ``due`` (unix seconds)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.send(send_id),
                mapping={"not_before": int(due * 1000), "send_at": iso_of(due)},
            )
            pipe.zadd(self.keys.scheduled, {send_id: due})
            pipe.execute()

    @translated("unschedule a send")
    def unschedule(self, send_id: str) -> None:
        """Take ``send_id`` out of the sends listed as held for a time to come."""
        self.redis.zrem(self.keys.scheduled, send_id)

    @translated("list scheduled sends")
    def scheduled(
        self, limit: int = 100, now: float | None = None
    ) -> list[tuple[str, float, str | None, str | None]]:
        """``(send id, due, state, campaign)`` of sends held past ``now``, soonest first."""
        since = time.time() if now is None else now
        rows: Any = self.redis.zrangebyscore(
            self.keys.scheduled, since, "+inf", start=0, num=limit, withscores=True
        )
        with self.redis.pipeline(transaction=False) as pipe:
            for member, _ in rows:
                pipe.hmget(self.keys.send(_text(member)), ["state", "campaign"])
            fields: list[Any] = pipe.execute()
        return [
            (_text(member), float(score), _maybe_text(state), _maybe_text(campaign))
            for (member, score), (state, campaign) in zip(rows, fields, strict=True)
        ]


def _maybe_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _recipient_json(status: str, message_id: str | None) -> str:
    """``json.dumps({"status": status, "message_id": message_id})``, built directly.

    One per recipient of every answer: 500 for each batch call.
    """
    return (
        f'{{"status": {encode_basestring_ascii(status)}, "message_id": '
        f"{'null' if message_id is None else encode_basestring_ascii(message_id)}}}"
    )


def _minute(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 60)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
