"""The producer side: validate, record ``queued``, put the message in the outbox, wake a worker.

Validation runs here, in the caller's process, so a bad message raises before
anything is written: the message is normalized and its calls built once
(``payload.prepare``), which also tells how it is cut into parts. The outbox
gets the normalized message, one envelope per part; the worker renders the
calls again with its own settings. The status record and the outbox entries are written in
one Redis transaction: a message is either fully enqueued or not at all, and no
record is left ``queued`` for a message that never was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from mailqueue.core.envelope import Envelope, envelopes_for
from mailqueue.core.message import campaign_name
from mailqueue.core.payload import MAX_BATCH_REQUESTS, ApiCall, Prepared, prepare
from mailqueue.errors import ValidationError
from mailqueue.produce.plan import Plan, plan_of
from mailqueue.records import StatusRecord
from mailqueue.store import keys
from mailqueue.store.batch import Batches
from mailqueue.store.connection import unavailable
from mailqueue.store.groups import SendIds
from mailqueue.store.message_index import note_send
from mailqueue.store.status import now_iso

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.campaigns import CampaignStore
    from mailqueue.store.outbox import Outbox
    from mailqueue.store.status import StatusStore
    from mailqueue.store.waker import Waker

__all__ = ["Producer", "enqueue", "enqueue_many", "get_status"]

log = logging.getLogger("mailqueue.producer")

# enqueue_many writes this many messages per Redis round trip.
PIPELINE_CHUNK = 500
# How many drains a bulk enqueue starts at once; more join while a backlog lasts.
BULK_WAKEUPS = 4


@dataclass(frozen=True)
class Producer:
    """What queueing writes through, as the client hands it: one transaction spans these stores.

    ``batches`` opens that transaction (``store/batch.py``, replicated under
    Sentinel); the stores queue their own commands on it.
    """

    settings: Settings
    batches: Batches
    status: StatusStore
    outbox: Outbox
    campaigns: CampaignStore
    waker: Waker


def enqueue(
    producer: Producer,
    message: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    send_id: str | None = None,
    **celery_options: Any,
) -> str:
    """Validate ``message`` and queue it in ``producer``'s outbox (options: ``api.enqueue``)."""
    prepared = prepare(message, producer.settings)
    plan = plan_of(message, celery_options)
    if plan.campaign:
        producer.campaigns.check_open(plan.campaign)
    if send_id is None:
        send_id = uuid.uuid4().hex
    elif keys.safe_id(send_id) is None:
        raise ValidationError("send_id must be a short id of safe characters", field="send_id")
    idem_key = None
    try:
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:
                raise ValidationError(
                    "idempotency_key must be a non-empty string", field="idempotency_key"
                )
            first = producer.status.first_send(idempotency_key, send_id)
            if first is not None:
                return first
            # Only a key this call wrote is forgotten on failure: when the SET
            # itself failed, Redis is unreachable and a second try would only
            # double the caller's wait.
            idem_key = idempotency_key
        # A ReplicationTimeout passes through, and the idempotency key is
        # kept: the message is on the master, so a retry must find it.
        with producer.batches(min_replicas=producer.settings.min_replicas) as batch:
            pipe = batch.pipe
            waiting = _write(producer, pipe, send_id, prepared, plan, created_at=now_iso())
            producer.outbox.add_many(pipe, waiting)
            if plan.campaign:
                producer.campaigns.add(pipe, plan.campaign, _recipient_count(prepared.calls))
            if plan.due is None:
                producer.waker.announce(pipe)
    except redis.RedisError as exc:
        if idem_key is not None:
            _forget(producer, idem_key, send_id)
        raise unavailable(producer.settings.status_redis_url, "enqueue", exc) from None
    if plan.due is not None:
        producer.waker.wake_at(plan.due, **celery_options)
    else:
        producer.waker.after_enqueue(batch.answers, task_id=send_id, **celery_options)
    return send_id


def enqueue_many(
    producer: Producer, messages: Iterable[Mapping[str, Any]], *, campaign: str | None = None
) -> SendIds:
    """Validate every message, then queue them all with pipelined writes; ids in order.

    A bad message raises ValidationError naming its index, and nothing is queued.
    The sends share a group id (the list's ``group_id``, ``group`` in their
    records) whose per-state counts (``groups.get_group``) follow the progress.
    ``campaign`` names the campaign of every message (see ``campaigns.py``).
    """
    campaign = campaign_name(campaign)
    built: list[Prepared] = []
    plans: list[Plan] = []
    for index, message in enumerate(messages):
        try:
            if campaign is not None:
                message = {**message, "campaign": campaign}
            built.append(prepare(message, producer.settings))
            plans.append(plan_of(message, {}))
        except ValidationError as exc:
            exc.index = index
            raise
    if not built:
        return SendIds()
    for name in sorted({plan.campaign for plan in plans if plan.campaign}):
        producer.campaigns.check_open(name)
    group = uuid.uuid4().hex
    ids = [uuid.uuid4().hex for _ in built]
    created_at = now_iso()
    written = 0
    try:
        for start in range(0, len(built), PIPELINE_CHUNK):
            with producer.batches(min_replicas=producer.settings.min_replicas) as batch:
                pipe = batch.pipe
                joined: dict[str, int] = {}
                waiting: list[Envelope] = []
                for offset, prepared in enumerate(built[start : start + PIPELINE_CHUNK]):
                    plan = plans[start + offset]
                    send_id = ids[start + offset]
                    waiting += _write(
                        producer, pipe, send_id, prepared, plan, created_at, group=group
                    )
                    if plan.campaign:
                        count = _recipient_count(prepared.calls)
                        joined[plan.campaign] = joined.get(plan.campaign, 0) + count
                producer.outbox.add_many(pipe, waiting)
                for name, count in joined.items():
                    producer.campaigns.add(pipe, name, count)
            written = start + PIPELINE_CHUNK
        with producer.batches() as batch:
            producer.waker.announce(batch.pipe)
        wake = producer.waker.must_wake(batch.answers)
    except redis.RedisError as exc:
        producer.status.forget_minute_expiry()
        queued = f"{min(written, len(built))} of {len(built)} messages were queued"
        raise unavailable(producer.settings.status_redis_url, f"enqueue ({queued})", exc) from None
    envelopes = sum(
        len(prepared.calls) for prepared, plan in zip(built, plans, strict=True) if plan.due is None
    )
    # One drain reads up to a batch call's worth of sends at a time.
    wakeups = (
        min(BULK_WAKEUPS, max(1, math.ceil(envelopes / MAX_BATCH_REQUESTS)))
        if wake and envelopes
        else 0
    )
    for _ in range(wakeups):
        producer.waker.wake_soon()
    scheduled = [plan.due for plan in plans if plan.due is not None]
    if scheduled:
        producer.waker.wake_at(min(scheduled))
    return SendIds(ids, group_id=group)


def get_status(status: StatusStore, send_id: str) -> StatusRecord | None:
    """The status record of a send, or None for an unknown id."""
    if not isinstance(send_id, str) or keys.safe_id(send_id) is None:
        return None
    try:
        return status.get(send_id)
    except redis.RedisError as exc:
        raise unavailable(status.url, "read a status record", exc) from None


def _recipient_count(calls: Sequence[ApiCall]) -> int:
    return sum(len(request) for call in calls for request in call.recipients)


def _write(
    producer: Producer,
    pipe: redis.client.Pipeline,
    send_id: str,
    prepared: Prepared,
    plan: Plan,
    created_at: str,
    *,
    group: str | None = None,
) -> list[Envelope]:
    """Queue a send's record and index on ``pipe``; its envelopes to add, unless scheduled."""
    producer.status.create(
        pipe,
        send_id,
        parts=len(prepared.calls),
        created_at=created_at,
        group=group,
        campaign=plan.campaign,
        send_at=plan.send_at,
        expires_at=plan.expires_at,
    )
    note_send(pipe, send_id, prepared.calls, campaign=plan.campaign, status=producer.status)
    envelopes = envelopes_for(
        prepared,
        send_id=send_id,
        stream=plan.stream,
        account=plan.account,
        group=group,
        campaign=plan.campaign,
        expires_at=plan.expires_at,
    )
    if plan.due is None:
        return envelopes
    producer.outbox.schedule_send(pipe, send_id, envelopes, plan.due)
    return []


def _forget(producer: Producer, idempotency_key: str, send_id: str) -> None:
    with contextlib.suppress(redis.RedisError):
        producer.status.forget_first_send(idempotency_key, send_id)
