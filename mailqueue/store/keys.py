"""Every Redis key mailqueue uses, and how long each lives.

One application's keys share a prefix (``MAILQUEUE_KEY_PREFIX``, default
``mq``), so that two applications can share one Redis. The prefix is written
as a hash tag, ``{mq}``: every key of an application lives in one hash slot,
so the transactions and scripts that touch several keys at once would also
hold on Redis Cluster (on one shard: the outbox is one queue).

Keys are built only from ids that mailqueue generated (send ids), validated
(Mailtrap message ids and event ids, see ``safe_id``), or hashed (the API
token and idempotency keys): a caller can never steer a write to a key of
its choosing. With the default prefix:

    {mq}:send:<send_id>        hash    the status record's scalar fields
    {mq}:rcpt:<send_id>        hash    recipient -> JSON {"status", "message_id"}
    {mq}:events:<send_id>      list    normalized tracking events, newest first, bounded
    {mq}:msgidx:<gen>:<bucket> hash    message id -> send id and recipients: the webhook index
                                       (``message_index.py``); gen: time // status TTL
    {mq}:msgid:<message_id>    string  the same, one key per id, as written before that index
    {mq}:evt:<event_id>        string  seen marker for webhook de-duplication
    {mq}:idem:<sha256>         string  send id first enqueued under an idempotency key
    {mq}:group:<group_id>      hash    per-state counts of the sends of one enqueue_many
    {mq}:group:<group_id>:failed
                               zset    its sends that ended failed or partially_sent, by when
    {mq}:outbox                stream  single sends waiting for a worker (consumer group "workers")
    {mq}:outbox:batch          stream  batch calls (merge-data sends) waiting for a worker
    {mq}:outbox:campaign:<stream>:<kind>:<name>
                               stream  the bulk lane: one per campaign, Mailtrap stream and
                                       kind (send or batch); <name> is "-" for lone bulk mail
    {mq}:outbox:campaigns      zset    the bulk lane's streams that may hold work, by first use
    {mq}:drains                zset    drains running now, scored by their heartbeat's expiry (ms)
    {mq}:drains:help           string  set for a second when a drain under a backlog woke another
    {mq}:drains:overdue        string  set for a while when a worker's sweep woke a drain for
                                       work whose wake-up was lost
    {mq}:wakeup                string  when the earliest scheduled wake-up fires (unix seconds)
    {mq}:wakeup:pending        string  set while a producer's wake-up is on its way to a worker
    {mq}:retry                 zset    parts waiting for a retry or their time, as
                                       "<send_id>|<part>", scored by due time (earlier
                                       versions kept whole envelopes here)
    {mq}:retry:<send_id>       hash    part -> the envelope of a part waiting in {mq}:retry
    {mq}:retries:<campaign>    set     a campaign's send ids with parts waiting in {mq}:retry
    {mq}:dead                  zset    dead-lettered send ids, scored by the time they failed
    {mq}:dead:<send_id>        hash    part -> the envelope of a dead-lettered part, for requeueing
    {mq}:rl:<token_key>        ...     the fleet-wide rate limiter's state
    {mq}:rl:<token_key>:bulk   zset    the bulk lane's grants in the same window
    {mq}:rl:<token_key>:demand string  set for a moment whenever bulk mail asks for a slot
    {mq}:rl:<token_key>:pace   string  when the schedule of transactional calls ends (pacing.py)
    {mq}:cooldown:<token_key>  string  set while the fleet backs off after a 429
    {mq}:limiters              hash    token_key -> JSON {amount, period, account, at}: the limits
                                       workers send under, as they note them (``fleet_limits``)
    {mq}:stats                 hash    counters (unknown webhook message ids, ...)
    {mq}:doubtful              zset    sends that may have gone out twice or whose outcome was
                                       unknown, scored by when (for ``mailqueue reconcile --all``)
    {mq}:campaign:<name>       hash    a campaign's state, totals and per-status recipient counts
    {mq}:held:<name>           list    envelopes of a paused campaign, back in the outbox on resume
    {mq}:handed:<name>         hash    unix minute -> a campaign's recipients handed to Mailtrap
    {mq}:backlog:<minute>      string  the outbox backlog a worker saw in that unix minute
    {mq}:campaigns             zset    campaign names, scored by when each was first enqueued
    {mq}:scheduled             zset    send ids held for a time to come, scored by it
    {mq}:suppressed            hash    comparable address -> JSON {address, reason, stream, ...}
    {mq}:suppressed:lifted     hash    comparable address -> when its suppression was lifted
                                       here (for the sync with Mailtrap's own list)
    {mq}:softbounce:<sha256>   zset    one address's recent soft bounces, scored by their time
    {mq}:cap:<token_key>:hour  hash    messages handed to Mailtrap per minute, the last hour
    {mq}:cap:<token_key>:day   hash    messages handed to Mailtrap per hour, the last day
"""

from __future__ import annotations

import hashlib
import re

# The prefix is a setting, checked where settings are read.
from mailqueue.settings import DEFAULT_PREFIX, check_prefix

__all__ = [
    "DEFAULT_PREFIX",
    "EVENTS_KEPT",
    "EVENT_ID_TTL",
    "MAILTRAP_WEBHOOK_RETRY_SECONDS",
    "OUTBOX_GROUP",
    "KeyFamily",
    "Keys",
    "check_prefix",
    "safe_id",
]

# The consumer group of both outbox streams.
OUTBOX_GROUP = "workers"
# How many tracking events a send keeps for get_status' history.
EVENTS_KEPT = 50
# Mailtrap retries a webhook delivery that failed 40 times, every 5 minutes,
# each attempt waiting up to 30 s for an answer: 3 h 40 min after the first.
MAILTRAP_WEBHOOK_RETRY_SECONDS = 40 * (5 * 60 + 30)
# Webhook event ids are remembered this long: past every retry of a delivery
# with room to spare (a first delivery late by its 30 s batching, clocks).
EVENT_ID_TTL = 6 * 3600

_SAFE_ID = re.compile(r"^[A-Za-z0-9._@:+=-]{1,200}$")


def safe_id(value: object) -> str | None:
    """``value`` when it can name a key (Mailtrap ids are UUID-like), else None."""
    if isinstance(value, str) and _SAFE_ID.match(value):
        return value
    return None


class KeyFamily:
    """The keys of one kind, one per id: ``keys.send("abc")`` is ``{mq}:send:abc``.

    ``hashed`` families name their key by the id's SHA-256 (idempotency keys,
    addresses): any string is accepted and none is stored.
    """

    def __init__(self, base: str, kind: str, *, suffix: str = "", hashed: bool = False) -> None:
        self._head = f"{base}:{kind}:"
        self._suffix = suffix
        self._hashed = hashed

    def __call__(self, name: str) -> str:
        if self._hashed:
            name = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self._head}{name}{self._suffix}"


class Keys:
    """The key names of one application (one prefix)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        problem = check_prefix(prefix)
        if problem is not None:
            raise ValueError(f"key prefix {prefix!r} {problem}")
        self.prefix = prefix
        self.base = base = f"{{{prefix}}}"
        self.outbox = f"{base}:outbox"
        self.outbox_batch = f"{base}:outbox:batch"
        self.outbox_campaigns = f"{base}:outbox:campaigns"
        self._campaign_queue = f"{base}:outbox:campaign:"
        self.drains = f"{base}:drains"
        self.drain_help = f"{base}:drains:help"
        self.drain_overdue = f"{base}:drains:overdue"
        self.wakeup = f"{base}:wakeup"
        self.wakeup_pending = f"{base}:wakeup:pending"
        self.retry = f"{base}:retry"
        self.dead = f"{base}:dead"
        self.stats = f"{base}:stats"
        self.limiters = f"{base}:limiters"
        self.doubtful = f"{base}:doubtful"
        self.campaigns = f"{base}:campaigns"
        self.scheduled = f"{base}:scheduled"
        self.suppressed = f"{base}:suppressed"
        self.suppressed_lifted = f"{base}:suppressed:lifted"
        # When each address's suppression was last lifted here, kept after a
        # sync has passed the lift on: older tracking events suppress no more.
        self.suppression_lifts = f"{base}:suppressed:lifts"
        # One key per id (a send, a message, a token, ...).
        self.send = KeyFamily(base, "send")
        self.recipients = KeyFamily(base, "rcpt")
        self.events = KeyFamily(base, "events")
        self.message_index = KeyFamily(base, "msgid")
        self.event_seen = KeyFamily(base, "evt")
        self.idempotency = KeyFamily(base, "idem", hashed=True)
        self.group = KeyFamily(base, "group")
        self.group_failed = KeyFamily(base, "group", suffix=":failed")
        self.dead_letter = KeyFamily(base, "dead")
        # The envelopes of a send's parts waiting in ``retry``, and a campaign's sends there:
        # how steering finds what waits without reading every waiting envelope.
        self.retry_parts = KeyFamily(base, "retry")
        self.campaign_retries = KeyFamily(base, "retries")
        self.rate_limit = KeyFamily(base, "rl")
        self.rate_limit_bulk = KeyFamily(base, "rl", suffix=":bulk")
        self.bulk_demand = KeyFamily(base, "rl", suffix=":demand")
        self.pace = KeyFamily(base, "rl", suffix=":pace")
        self.cooldown = KeyFamily(base, "cooldown")
        self.campaign = KeyFamily(base, "campaign")
        self.campaign_held = KeyFamily(base, "held")
        # Not under "campaign:": a campaign's name may hold a colon.
        self.campaign_minutes = KeyFamily(base, "handed")
        # The outbox backlog sampled by the workers, by unix minute.
        self.backlog_minute = KeyFamily(base, "backlog")
        self.soft_bounces = KeyFamily(base, "softbounce", hashed=True)
        # A minute's state changes (``StatusStore.states_by_minute``), by its unix minute.
        self.state_minute = KeyFamily(base, "states")
        # An address's recent sends (``message_index.note_send``), by the address's SHA-256.
        self.address_sends = KeyFamily(base, "addr", hashed=True)

    def __repr__(self) -> str:
        return f"Keys({self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keys) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)

    def message_bucket(self, generation: int, bucket: int) -> str:
        return f"{self.base}:msgidx:{generation}:{bucket}"

    def cap(self, token_key: str, period: str) -> str:
        return f"{self.base}:cap:{token_key}:{period}"

    def campaign_queue(self, stream: str, kind: str, campaign: str) -> str:
        return f"{self._campaign_queue}{stream}:{kind}:{campaign or '-'}"

    def parse_campaign_queue(self, name: str) -> tuple[str, str, str] | None:
        """``(stream, kind, campaign)`` of a campaign queue's name, None for any other name."""
        if not name.startswith(self._campaign_queue):
            return None
        stream, _, rest = name[len(self._campaign_queue) :].partition(":")
        kind, _, campaign = rest.partition(":")
        return stream, kind, "" if campaign == "-" else campaign
