"""One send too large to hold in memory, queued from a stream of parts (a campaign file).

``enqueue`` of a merge-data batch to a million recipients builds the whole
message, its payload and its envelopes at once: gigabytes. Here the caller
gives the send as a stream of batch messages (say 500 rows of a CSV each)
and each becomes one or more *parts* of a single send, in two passes:

1. validate: each message is built (``payload.prepare``) and its envelopes
   (its parts of the normalized message) are written to a spool file on
   disk, nothing to Redis. A bad message raises
   ValidationError naming its index, and nothing is queued.
2. enqueue: the spooled envelopes go to the outbox a few thousand recipients
   per transaction; each transaction also counts its recipients in the
   campaign and notes in the send's record how many parts are queued.

Memory stays that of one message, whatever the size of the send.

An enqueue cut short (Redis lost, the process killed) leaves a prefix of the
parts queued, the record saying how many (``enqueued``); running it again
with the same ``send_id`` queues only the rest. With the same ``send_id`` and
every part already queued, nothing is queued again.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import redis

from mailqueue.core.envelope import Envelope, envelopes_for
from mailqueue.core.message import campaign_name
from mailqueue.core.payload import Prepared, prepare
from mailqueue.errors import ValidationError
from mailqueue.produce.plan import Plan, plan_of
from mailqueue.produce.producer import BULK_WAKEUPS
from mailqueue.store import keys
from mailqueue.store.connection import unavailable
from mailqueue.store.status import now_iso

if TYPE_CHECKING:
    from mailqueue.produce.producer import Producer

__all__ = ["ChunkedSend", "QueuedGroup", "enqueue_chunked", "enqueue_each"]

# Parts written per Redis transaction: 20 batch calls are 10,000 recipients.
PARTS_PER_TRANSACTION = 20


@dataclass(frozen=True)
class ChunkedSend:
    """What ``enqueue_chunked`` queued: the send, its parts and recipients.

    ``resumed_from`` is the number of parts an earlier, interrupted enqueue of
    the same send had queued already (0 for a new send); ``already_queued``
    says every part was queued before this call.
    """

    send_id: str
    parts: int
    recipients: int
    resumed_from: int = 0

    @property
    def already_queued(self) -> bool:
        return self.resumed_from >= self.parts


Progress = Callable[[str, int], None]
Messages = Iterable[Mapping[str, Any]]


def enqueue_chunked(
    producer: Producer,
    messages: Messages,
    *,
    send_id: str | None = None,
    progress: Progress | None = None,
    left_out: Callable[[], int] | None = None,
) -> ChunkedSend:
    """Queue the messages as the parts of one send; validates every one before queuing any.

    Every message shares the first one's campaign, Mailtrap stream and
    account; none may be scheduled (``send_at``). ``progress(phase, n)`` is
    called as recipients are validated (``"validated"``) and queued
    (``"queued"``). ``left_out()``, asked once every message is read, is how
    many recipients the caller dropped as repeated: the campaign's record
    counts them with the send's first transaction.
    """
    if send_id is None:
        send_id = uuid.uuid4().hex
    elif keys.safe_id(send_id) is None:
        raise ValidationError("send_id must be a short id of safe characters", field="send_id")
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        plan, parts, recipients = _validate(producer, messages, send_id, spool, progress)
        if plan.campaign:
            producer.campaigns.check_open(plan.campaign)
        spool.seek(0)
        repeated = left_out() if left_out is not None else 0
        try:
            done = _queue(producer, spool, send_id, plan, parts, progress, repeated)
        except redis.RedisError as exc:
            producer.status.forget_minute_expiry()
            doing = (
                f"enqueue (send {send_id} may be queued in part: "
                "run the same enqueue again to queue the rest)"
            )
            raise unavailable(producer.settings.status_redis_url, doing, exc) from None
    return ChunkedSend(send_id, parts, recipients, done)


def _validate(
    producer: Producer,
    messages: Iterable[Mapping[str, Any]],
    send_id: str,
    spool: IO[str],
    progress: Progress | None,
) -> tuple[Plan, int, int]:
    """Build every message's parts into the spool, one line per part: count, stream, envelope."""
    plan: Plan | None = None
    parts = recipients = 0
    for index, message in enumerate(messages):
        prepared, this = _validated(producer, message, index)
        if plan is None:
            plan = this
        for envelope in _envelopes(send_id, parts, prepared, plan):
            count = len(envelope.flat_recipients)
            spool.write(f"{count} {producer.outbox.stream_for(envelope)} {envelope.encode()}\n")
            parts += 1
            recipients += count
        if progress is not None:
            progress("validated", recipients)
    if plan is None:
        raise ValidationError("no messages to queue", field="messages")
    return plan, parts, recipients


def _validated(producer: Producer, message: Mapping[str, Any], index: int) -> tuple[Prepared, Plan]:
    """A message's parts and plan; ValidationError naming its index (and refusing a schedule)."""
    try:
        prepared = prepare(message, producer.settings)
        plan = plan_of(message, {})
    except ValidationError as exc:
        exc.index = index
        raise
    if plan.due is not None:
        raise ValidationError(
            "a message queued from a stream cannot be scheduled", field="send_at", index=index
        )
    return prepared, plan


def _envelopes(send_id: str, first: int, prepared: Prepared, plan: Plan) -> list[Envelope]:
    """One message's envelopes as parts ``first``, ``first + 1``, ... of the send.

    A send of several parts waits in the bulk lane, in its campaign's stream,
    else in one of its own (as ``envelopes_for`` places it), whatever the
    campaign of the message's first envelope says.
    """
    envelopes = envelopes_for(
        prepared,
        send_id=send_id,
        stream=plan.stream,
        account=plan.account,
        campaign=plan.campaign or send_id,
        expires_at=plan.expires_at,
    )
    for offset, envelope in enumerate(envelopes):
        envelope.part = first + offset
        envelope.campaign = plan.campaign or ""
    return envelopes


def _queue(
    producer: Producer,
    spool: IO[str],
    send_id: str,
    plan: Plan,
    parts: int,
    progress: Progress | None,
    repeated: int = 0,
) -> int:
    """Write the spooled parts not yet queued; returns how many were queued before."""
    known, queued = producer.status.queued_parts(send_id)
    if known is not None and known != parts:
        raise ValidationError(
            f"send {send_id} was queued with {known} parts, not {parts}", field="send_id"
        )
    start = 0
    if known is not None:  # a send ``enqueue`` queued whole has no count: nothing is missing
        start = queued if queued is not None else parts
    lines = itertools.islice(spool, start, None)
    written = start
    total = 0
    woken = False
    while True:
        chunk = list(itertools.islice(lines, PARTS_PER_TRANSACTION))
        if not chunk:
            return start
        with producer.batches(min_replicas=producer.settings.min_replicas) as batch:
            pipe = batch.pipe
            first = written == 0 and known is None
            if first:
                producer.status.create(
                    pipe,
                    send_id,
                    parts=parts,
                    created_at=now_iso(),
                    campaign=plan.campaign,
                    expires_at=plan.expires_at,
                )
            count = 0
            entries = []
            for line in chunk:
                number, stream, raw = line.rstrip("\n").split(" ", 2)
                entries.append((stream, raw))
                count += int(number)
            producer.outbox.add_encoded(pipe, entries)
            if plan.campaign and count:
                producer.campaigns.add(pipe, plan.campaign, count)
            if plan.campaign and first and repeated:
                producer.campaigns.note_repeated(pipe, plan.campaign, repeated)
            written += len(chunk)
            producer.status.note_queued_parts(pipe, send_id, written)
            producer.waker.announce(pipe)
        if progress is not None:
            total += count
            progress("queued", total)
        # Workers start on the first parts while the rest is written.
        if not woken and producer.waker.must_wake(batch.answers):
            woken = True
            for _ in range(BULK_WAKEUPS):
                producer.waker.wake_soon()


# -- many sends, one group ---------------------------------------------------

# Sends written per Redis transaction by ``enqueue_each``.
SENDS_PER_TRANSACTION = 500


@dataclass(frozen=True)
class QueuedGroup:
    """What ``enqueue_each`` queued: the group of the sends, how many, and their recipients."""

    group_id: str
    sends: int
    recipients: int


def enqueue_each(
    producer: Producer,
    messages: Messages,
    *,
    campaign: str | None = None,
    progress: Progress | None = None,
    left_out: Callable[[], int] | None = None,
) -> QueuedGroup:
    """Queue each message as a send of its own, in one group, holding none of them in memory.

    ``enqueue_many`` for a stream of any length: every message is validated
    (into a spool on disk) before any is queued, a bad one raising
    ValidationError naming its index; then 500 sends per transaction. No
    message may be scheduled. Returns the group (``get_group``), not the ids.
    An enqueue cut short leaves the transactions written so far queued.
    ``left_out`` is as for ``enqueue_chunked``: counted in ``campaign``'s record.
    """
    campaign = campaign_name(campaign)
    group = uuid.uuid4().hex
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        sends = recipients = 0
        campaigns: set[str] = set()
        for index, message in enumerate(messages):
            if campaign is not None:
                message = {**message, "campaign": campaign}
            prepared, plan = _validated(producer, message, index)
            send_id = uuid.uuid4().hex
            envelopes = envelopes_for(
                prepared, send_id=send_id, stream=plan.stream, account=plan.account, group=group,
                campaign=plan.campaign, expires_at=plan.expires_at,
            )  # fmt: skip
            count = sum(len(e.flat_recipients) for e in envelopes)
            line = {
                "id": send_id,
                "n": count,
                "campaign": plan.campaign,
                "expires": plan.expires_at,
                "env": [[producer.outbox.stream_for(e), e.encode()] for e in envelopes],
            }
            spool.write(json.dumps(line, separators=(",", ":")) + "\n")
            sends += 1
            recipients += count
            if plan.campaign:
                campaigns.add(plan.campaign)
            if progress is not None and sends % SENDS_PER_TRANSACTION == 0:
                progress("validated", sends)
        for name in sorted(campaigns):
            producer.campaigns.check_open(name)
        spool.seek(0)
        repeated = {campaign: left_out()} if campaign and left_out is not None else {}
        try:
            _queue_each(producer, spool, group, progress, repeated)
        except redis.RedisError as exc:
            producer.status.forget_minute_expiry()
            doing = f"enqueue (group {group} may be queued in part)"
            raise unavailable(producer.settings.status_redis_url, doing, exc) from None
    return QueuedGroup(group, sends, recipients)


def _queue_each(
    producer: Producer,
    spool: IO[str],
    group: str,
    progress: Progress | None,
    repeated: Mapping[str, int],
) -> None:
    created_at = now_iso()
    queued = 0
    woken = False
    while chunk := list(itertools.islice(spool, SENDS_PER_TRANSACTION)):
        with producer.batches(min_replicas=producer.settings.min_replicas) as batch:
            pipe = batch.pipe
            joined: dict[str, int] = {}
            entries: list[tuple[str, str]] = []
            for raw in chunk:
                line = json.loads(raw)
                producer.status.create(
                    pipe, line["id"], parts=len(line["env"]), created_at=created_at, group=group,
                    campaign=line["campaign"], expires_at=line["expires"],
                )  # fmt: skip
                entries.extend((stream, envelope) for stream, envelope in line["env"])
                if line["campaign"]:
                    joined[line["campaign"]] = joined.get(line["campaign"], 0) + line["n"]
            producer.outbox.add_encoded(pipe, entries)
            for name, count in joined.items():
                producer.campaigns.add(pipe, name, count)
                if queued == 0 and repeated.get(name):
                    producer.campaigns.note_repeated(pipe, name, repeated[name])
            producer.waker.announce(pipe)
        queued += len(chunk)
        if progress is not None:
            progress("queued", queued)
        if not woken and producer.waker.must_wake(batch.answers):
            woken = True
            for _ in range(BULK_WAKEUPS):
                producer.waker.wake_soon()
