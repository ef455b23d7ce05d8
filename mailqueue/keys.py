"""Every Redis key mailqueue uses, and how long each lives.

Keys are built only from ids that mailqueue generated (send ids), validated
(Mailtrap message ids and event ids, see ``safe_id``), or hashed (the API
token and idempotency keys): a caller can never steer a write to a key of
its choosing.

    mq:send:<send_id>        hash    the status record's scalar fields
    mq:rcpt:<send_id>        hash    recipient -> JSON {"status", "message_id"}
    mq:events:<send_id>      list    normalized tracking events, newest first, bounded
    mq:msgid:<message_id>    string  JSON {"send", "recipients"}: the webhook index
    mq:evt:<event_id>        string  seen marker for webhook de-duplication
    mq:idem:<sha256>         string  send id first enqueued under an idempotency key
    mq:group:<group_id>      hash    per-state counts of the sends of one enqueue_many
    mq:outbox                stream  single sends waiting for a worker (consumer group "workers")
    mq:outbox:batch          stream  batch calls (merge-data sends) waiting for a worker
    mq:drains                zset    drains running now, scored by their heartbeat's expiry (ms)
    mq:drains:help           string  set for a second when a drain under a backlog woke another
    mq:wakeup                string  when the earliest scheduled wake-up fires (unix seconds)
    mq:wakeup:pending        string  set while a producer's wake-up is on its way to a worker
    mq:retry                 zset    envelopes waiting for a retry, scored by due time
    mq:dead                  zset    dead-lettered send ids, scored by the time they failed
    mq:dead:<send_id>        hash    part -> the envelope of a dead-lettered part, for requeueing
    mq:rl:<token_key>        ...     the fleet-wide rate limiter's state
    mq:rl:<token_key>:bulk   zset    the bulk lane's grants in the same window
    mq:rl:<token_key>:demand string  set for a moment whenever bulk mail asks for a slot
    mq:cooldown:<token_key>  string  set while the fleet backs off after a 429
    mq:stats                 hash    counters (unknown webhook message ids, ...)
    mq:doubtful              zset    sends that may have gone out twice or whose outcome was
                                     unknown, scored by when (for ``mailqueue reconcile --all``)
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "mq"

OUTBOX = f"{PREFIX}:outbox"
OUTBOX_BATCH = f"{PREFIX}:outbox:batch"
OUTBOX_GROUP = "workers"
DRAINS = f"{PREFIX}:drains"
DRAIN_HELP = f"{PREFIX}:drains:help"
WAKEUP = f"{PREFIX}:wakeup"
WAKEUP_PENDING = f"{PREFIX}:wakeup:pending"
RETRY = f"{PREFIX}:retry"
DEAD = f"{PREFIX}:dead"
STATS = f"{PREFIX}:stats"
DOUBTFUL = f"{PREFIX}:doubtful"

# How many tracking events a send keeps for get_status' history.
EVENTS_KEPT = 50
# Webhook event ids are remembered this long: Mailtrap retries a failed
# delivery 40 times, every 5 minutes, so 3.5 hours covers every replay.
EVENT_ID_TTL = 4 * 3600

_SAFE_ID = re.compile(r"^[A-Za-z0-9._@:+=-]{1,200}$")


def safe_id(value: object) -> str | None:
    """``value`` when it can name a key (Mailtrap ids are UUID-like), else None."""
    if isinstance(value, str) and _SAFE_ID.match(value):
        return value
    return None


def send(send_id: str) -> str:
    return f"{PREFIX}:send:{send_id}"


def recipients(send_id: str) -> str:
    return f"{PREFIX}:rcpt:{send_id}"


def events(send_id: str) -> str:
    return f"{PREFIX}:events:{send_id}"


def message_index(message_id: str) -> str:
    return f"{PREFIX}:msgid:{message_id}"


def event_seen(event_id: str) -> str:
    return f"{PREFIX}:evt:{event_id}"


def idempotency(key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{PREFIX}:idem:{digest}"


def group(group_id: str) -> str:
    return f"{PREFIX}:group:{group_id}"


def dead_letter(send_id: str) -> str:
    return f"{PREFIX}:dead:{send_id}"


def rate_limit(token_key: str) -> str:
    return f"{PREFIX}:rl:{token_key}"


def rate_limit_bulk(token_key: str) -> str:
    return f"{PREFIX}:rl:{token_key}:bulk"


def bulk_demand(token_key: str) -> str:
    return f"{PREFIX}:rl:{token_key}:demand"


def cooldown(token_key: str) -> str:
    return f"{PREFIX}:cooldown:{token_key}"
