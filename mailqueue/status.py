"""StatusStore: every send's status record in Redis.

A send is split into *parts*, one per API call the producer built (a single
message is one part; a batch send of 1,200 recipients is three). A part is
claimed before its call and marked done after its answer, so a redelivered
part whose call already succeeded is never sent again. The send's state is
derived from its parts: ``sent`` when every part was accepted, ``failed`` when
none was, ``partially_sent`` otherwise.

Record layout (keys in ``mailqueue.keys``):
    mq:send:<id>  state, attempts, created_at, updated_at, parts, group,
                  error (JSON), possible_duplicates, next_attempt_at,
                  done:<part> (sent|partial|failed), lease:<part> (ms deadline)
    mq:rcpt:<id>  recipient -> JSON {"status", "message_id"}
Neither ever holds the API token or a message body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple, cast

import redis

from .keys import Keys, safe_id
from .records import State, StatusRecord
from .redis_edge import translated
from .settings import Settings

__all__ = ["Claim", "PartRef", "PartResult", "StatusStore", "now_iso"]

Claim = Literal["go", "done", "busy", "doubt"]

# Claim parts of sends for one attempt. KEYS: n send hashes, then n group
# hashes (a send in no group repeats its own hash there). ARGV: now (ISO),
# now (ms), lease (ms), ttl (s), reconcile (0/1), then one part number per send.
# Answers per send: 1 go, 0 already done, 2 another worker holds a live lease,
# 3 go, but an earlier call of the part may have reached Mailtrap (look it up).
# A lease left behind by a worker that died mid-call means that call may have
# reached Mailtrap: when reconciling, the part is marked doubtful since the
# lease began (began:<part> -> doubt:<part>, ms); otherwise the new attempt is counted as a
# possible duplicate.
_CLAIM = """
local out = {}
local now_iso, now_ms, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = #KEYS / 2
for i = 1, n do
  local key, gkey, part = KEYS[i], KEYS[n + i], ARGV[5 + i]
  if redis.call('HEXISTS', key, 'done:' .. part) == 1 then
    out[i] = 0
  else
    local held = tonumber(redis.call('HGET', key, 'lease:' .. part))
    if held and held > now_ms then
      out[i] = 2
    else
      if held and ARGV[5] == '1' then
        local began = redis.call('HGET', key, 'began:' .. part) or (held - lease)
        redis.call('HSETNX', key, 'doubt:' .. part, began)
      elseif held then
        redis.call('HINCRBY', key, 'possible_duplicates', 1)
      end
      local state = redis.call('HGET', key, 'state')
      if not state then
        redis.call('HSET', key, 'created_at', now_iso, 'parts', 1)
      end
      if state ~= 'sent' and state ~= 'partially_sent' and state ~= 'failed' then
        if state ~= 'sending' then
          if gkey ~= key and state then
            redis.call('HINCRBY', gkey, state, -1)
            redis.call('HINCRBY', gkey, 'sending', 1)
          end
        end
        redis.call('HSET', key, 'state', 'sending')
      end
      redis.call('HSET', key, 'lease:' .. part, now_ms + lease, 'updated_at', now_iso)
      if ARGV[5] == '1' then redis.call('HSET', key, 'began:' .. part, now_ms) end
      redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('EXPIRE', key, ttl)
      out[i] = 1
      if ARGV[5] == '1' and redis.call('HEXISTS', key, 'doubt:' .. part) == 1 then out[i] = 3 end
    end
  end
end
return out
"""

# Record the outcome of one part. KEYS: send hash, recipients hash, group
# hash (the send hash again for a send in no group).
# ARGV: part, outcome (sent|partial|failed), now, ttl, error JSON or "",
# then recipient/value pairs. Returns the send's state after the update.
_RECORD = """
local key, rkey, gkey = KEYS[1], KEYS[2], KEYS[3]
local part, outcome, now_iso, ttl, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', key, 'done:' .. part) == 1 then
  return redis.call('HGET', key, 'state')
end
redis.call('HSET', key, 'done:' .. part, outcome, 'updated_at', now_iso)
redis.call('HDEL', key, 'lease:' .. part, 'began:' .. part, 'doubt:' .. part, 'looks:' .. part)
redis.call('HINCRBY', key, 'parts_' .. outcome, 1)
if err ~= '' then redis.call('HSET', key, 'error', err) end
for i = 6, #ARGV, 2 do
  redis.call('HSET', rkey, ARGV[i], ARGV[i + 1])
end
local parts = tonumber(redis.call('HGET', key, 'parts') or '1')
local ok = tonumber(redis.call('HGET', key, 'parts_sent') or '0')
local partial = tonumber(redis.call('HGET', key, 'parts_partial') or '0')
local failed = tonumber(redis.call('HGET', key, 'parts_failed') or '0')
local old = redis.call('HGET', key, 'state')
local state = old
if ok + partial + failed >= parts then
  if ok == parts then state = 'sent'
  elseif failed == parts then state = 'failed'
  else state = 'partially_sent' end
  if state ~= 'failed' then redis.call('HDEL', key, 'error') end
elseif old ~= 'sending' then
  state = 'sending'
end
if state ~= old then
  redis.call('HSET', key, 'state', state)
  if gkey ~= key then
    if old then redis.call('HINCRBY', gkey, old, -1) end
    redis.call('HINCRBY', gkey, state, 1)
  end
end
redis.call('EXPIRE', key, ttl)
redis.call('EXPIRE', rkey, ttl)
return state
"""

# A part's attempt failed transiently and will be retried later. KEYS: send
# hash, group hash (the send hash again for none). ARGV: part, now, error
# JSON, next attempt (ISO), maybe delivered (0/1).
_RETRY = """
local key, gkey, part = KEYS[1], KEYS[2], ARGV[1]
if redis.call('HEXISTS', key, 'done:' .. part) == 1 then return 0 end
redis.call('HDEL', key, 'lease:' .. part)
redis.call('HSET', key, 'updated_at', ARGV[2], 'error', ARGV[3], 'next_attempt_at', ARGV[4])
if ARGV[5] == '1' then redis.call('HINCRBY', key, 'possible_duplicates', 1) end
local old = redis.call('HGET', key, 'state')
if old == 'sending' or old == 'queued' then
  redis.call('HSET', key, 'state', 'retrying')
  if gkey ~= key then
    redis.call('HINCRBY', gkey, old, -1)
    redis.call('HINCRBY', gkey, 'retrying', 1)
  end
end
return 1
"""

# Put a dead-lettered part back in play. KEYS: send hash, group hash (the
# send hash again for none). ARGV: part, now.
_REVIVE = """
local key, gkey, part = KEYS[1], KEYS[2], ARGV[1]
local outcome = redis.call('HGET', key, 'done:' .. part)
if not outcome then return 0 end
redis.call('HDEL', key, 'done:' .. part, 'error', 'next_attempt_at')
redis.call('HINCRBY', key, 'parts_' .. outcome, -1)
local old = redis.call('HGET', key, 'state')
redis.call('HSET', key, 'state', 'queued', 'updated_at', ARGV[2])
if gkey ~= key and old ~= 'queued' then
  if old then redis.call('HINCRBY', gkey, old, -1) end
  redis.call('HINCRBY', gkey, 'queued', 1)
end
return 1
"""


def now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PartResult:
    """One part's outcome: per-recipient message ids, and an error when any failed."""

    outcome: Literal["sent", "partial", "failed"]
    recipients: Mapping[str, str | None]  # recipient -> message id (None: failed)
    error: Mapping[str, Any] | None = None


class PartRef(NamedTuple):
    """One part of a send, and the send's group (``Envelope.ref``)."""

    send_id: str
    part: int
    group: str | None = None


class StatusStore:
    """Reads and writes status records; one instance per process is enough."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.url = settings.status_redis_url
        self.ttl = max(int(settings.status_ttl), 1)
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._retry = client.register_script(_RETRY)
        self._revive = client.register_script(_REVIVE)

    # -- producer side --------------------------------------------------

    def create(
        self,
        pipe: redis.client.Pipeline,
        send_id: str,
        *,
        parts: int,
        created_at: str,
        group: str | None = None,
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
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl)

    @translated("record a refused send")
    def create_rejected(self, send_id: str, error: Mapping[str, Any]) -> None:
        """Record a send refused before it was queued (a message that failed validation)."""
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
            pipe.execute()

    # -- worker side ----------------------------------------------------

    @translated("claim parts for sending")
    def claim(
        self, parts: Sequence[PartRef], lease_seconds: float, *, reconcile: bool = False
    ) -> list[Claim]:
        """Claim parts for one attempt; one answer per part, in order.

        With ``reconcile``, a part whose earlier call may have reached Mailtrap
        (a dead worker's lease, or ``mark_doubtful``) answers ``"doubt"``.
        """
        if not parts:
            return []
        now_ms = int(time.time() * 1000)
        answers = self._claim(
            keys=[self.keys.send(p.send_id) for p in parts] + [self._group(p) for p in parts],
            args=[
                now_iso(),
                now_ms,
                int(lease_seconds * 1000),
                self.ttl,
                1 if reconcile else 0,
                *(p.part for p in parts),
            ],
        )
        mapping: dict[int, Claim] = {1: "go", 0: "done", 2: "busy", 3: "doubt"}
        return [mapping[int(answer)] for answer in answers]

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
                pipe.set(
                    self.keys.message_index(message_id),
                    json.dumps({"send": send_id, "recipients": [recipient]}),
                    ex=self.ttl,
                )
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

    def note_look(self, pipe: redis.client.Pipeline, send_id: str, part: int) -> None:
        """Queue counting one look-up of a part that found nothing."""
        pipe.hincrby(self.keys.send(send_id), f"looks:{part}", 1)

    def count(self, pipe: redis.client.Pipeline, send_id: str, name: str, amount: int = 1) -> None:
        """Queue adding ``amount`` to a counter of the record (``reconciled``, ...)."""
        pipe.hincrby(self.keys.send(send_id), name, amount)

    def record(self, pipe: redis.client.Pipeline, ref: PartRef, result: PartResult) -> None:
        """Queue the commands recording a finished part (and its message-id index) on ``pipe``."""
        send_id = ref.send_id
        values: list[str] = []
        by_message: dict[str, list[str]] = {}
        for recipient, message_id in result.recipients.items():
            # A send Mailtrap accepted is queued even when its answer lacked an id.
            status = "queued" if message_id is not None or result.outcome == "sent" else "failed"
            values += [recipient, json.dumps({"status": status, "message_id": message_id})]
            if message_id and safe_id(message_id):
                by_message.setdefault(message_id, []).append(recipient)
        error = json.dumps(result.error) if result.error else ""
        self._record(
            keys=[self.keys.send(send_id), self.keys.recipients(send_id), self._group(ref)],
            args=[ref.part, result.outcome, now_iso(), self.ttl, error, *values],
            client=pipe,
        )
        for message_id, recipients in by_message.items():
            pipe.set(
                self.keys.message_index(message_id),
                json.dumps({"send": send_id, "recipients": recipients}),
                ex=self.ttl,
            )

    def mark_retrying(
        self,
        pipe: redis.client.Pipeline,
        ref: PartRef,
        error: Mapping[str, Any],
        next_attempt_at: float,
        maybe_delivered: bool,
    ) -> None:
        """Queue the commands marking a part as waiting for a retry."""
        when = datetime.fromtimestamp(next_attempt_at, timezone.utc)
        self._retry(
            keys=[self.keys.send(ref.send_id), self._group(ref)],
            args=[
                ref.part,
                now_iso(),
                json.dumps(error),
                when.isoformat(timespec="seconds").replace("+00:00", "Z"),
                1 if maybe_delivered else 0,
            ],
            client=pipe,
        )

    @translated("revive a dead-lettered part")
    def revive(self, ref: PartRef) -> bool:
        """Undo a failed part so that it can be sent again (dead-letter requeue)."""
        script_keys = [self.keys.send(ref.send_id), self._group(ref)]
        return bool(self._revive(keys=script_keys, args=[ref.part, now_iso()]))

    def count_duplicates(self, pipe: redis.client.Pipeline, send_id: str, amount: int) -> None:
        """Queue counting ``amount`` more possible duplicates on a send."""
        pipe.hincrby(self.keys.send(send_id), "possible_duplicates", amount)

    def _group(self, ref: PartRef) -> str:
        # The scripts take a send in no group's own hash in place of a group hash.
        return self.keys.group(ref.group) if ref.group else self.keys.send(ref.send_id)

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
        if fields.get("next_attempt_at") and record["state"] == "retrying":
            record["next_attempt_at"] = fields["next_attempt_at"]
        if fields.get("group"):
            record["group"] = fields["group"]
        if events:
            record["events"] = [json.loads(event) for event in events]
        return record

    @translated("read a send's state")
    def state(self, send_id: str) -> str | None:
        """Just the state, in one round trip."""
        value = self.redis.hget(self.keys.send(send_id), "state")
        return _text(value) if value is not None else None

    @translated("read a group's progress")
    def group_counts(self, group_id: str) -> dict[str, int]:
        """Per-state counts of the sends of one ``enqueue_many`` call."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.group(group_id)))
        return {_text(k): int(v) for k, v in raw.items() if int(v)}

    @translated("read a send's recipients")
    def recipient_counts(self, send_id: str) -> dict[str, int]:
        """Per-status counts of one send's recipients (a campaign's progress)."""
        counts: dict[str, int] = {}
        for _, value in self.redis.hscan_iter(self.keys.recipients(send_id), count=1000):
            status = json.loads(value)["status"]
            counts[status] = counts.get(status, 0) + 1
        return counts

    @translated("count a statistic")
    def increment_stat(self, name: str, amount: int = 1) -> None:
        self.redis.hincrby(self.keys.stats, name, amount)

    @translated("read statistics")
    def stats(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.stats))
        return {_text(k): int(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
