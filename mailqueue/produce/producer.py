"""The producer side: validate, record ``queued``, put the calls in the outbox, wake a worker.

Validation runs here, in the caller's process, so a bad message raises before
anything is written. The status record and the outbox entries are written in
one Redis transaction: a message is either fully enqueued or not at all, and no
record is left ``queued`` for a message that never was.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import redis

from mailqueue.core.envelope import envelopes_for
from mailqueue.core.message import campaign_name
from mailqueue.core.payload import MAX_BATCH_REQUESTS, ApiCall, build_payload
from mailqueue.core.schedule import schedule_of
from mailqueue.errors import ValidationError
from mailqueue.records import StatusRecord
from mailqueue.store import keys
from mailqueue.store.address_index import note_send
from mailqueue.store.connection import replicated_transaction, unavailable
from mailqueue.store.groups import SendIds
from mailqueue.store.status import now_iso

if TYPE_CHECKING:
    from mailqueue.store.stores import Stores

__all__ = ["enqueue", "enqueue_many", "get_status"]

log = logging.getLogger("mailqueue.producer")

# enqueue_many writes this many messages per Redis round trip.
PIPELINE_CHUNK = 500
# How many drains a bulk enqueue starts at once; more join while a backlog lasts.
BULK_WAKEUPS = 4


def enqueue(
    rt: Stores,
    message: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    send_id: str | None = None,
    **celery_options: Any,
) -> str:
    """Validate ``message`` and queue it on ``rt``'s outbox (``api.enqueue`` tells the options)."""
    calls = build_payload(message, rt.settings)
    plan = _plan(message, celery_options)
    if plan.campaign:
        rt.campaigns.check_open(plan.campaign)
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
            key = rt.keys.idempotency(idempotency_key)
            first = rt.redis.set(key, send_id, nx=True, get=True, ex=rt.store.ttl)
            if first is not None:
                return first.decode() if isinstance(first, bytes) else str(first)
            # Only a key this call wrote is forgotten on failure: when the SET
            # itself failed, Redis is unreachable and a second try would only
            # double the caller's wait.
            idem_key = key
        # A ReplicationTimeout passes through, and the idempotency key is
        # kept: the message is on the master, so a retry must find it.
        with replicated_transaction(rt.redis, rt.settings.min_replicas) as pipe:
            _write(rt, pipe, send_id, calls, plan, created_at=now_iso())
            if plan.campaign:
                rt.campaigns.add(pipe, plan.campaign, _recipient_count(calls))
            if plan.due is None:
                rt.waker.announce(pipe)
            results = pipe.execute()
    except redis.RedisError as exc:
        if idem_key is not None:
            _forget(rt, idem_key, send_id)
        raise unavailable(rt.settings.status_redis_url, "enqueue", exc) from None
    if plan.due is not None:
        rt.waker.wake_at(plan.due, **celery_options)
    else:
        rt.waker.after_enqueue(results, task_id=send_id, **celery_options)
    return send_id


def enqueue_many(
    rt: Stores, messages: Iterable[Mapping[str, Any]], *, campaign: str | None = None
) -> SendIds:
    """Validate every message, then queue them all with pipelined writes; ids in order.

    A bad message raises ValidationError naming its index, and nothing is queued.
    The sends share a group id (the list's ``group_id``, ``group`` in their
    records) whose per-state counts (``groups.get_group``) follow the progress.
    ``campaign`` names the campaign of every message (see ``campaigns.py``).
    """
    campaign = campaign_name(campaign)
    built: list[list[ApiCall]] = []
    plans: list[_Plan] = []
    for index, message in enumerate(messages):
        try:
            if campaign is not None:
                message = {**message, "campaign": campaign}
            built.append(build_payload(message, rt.settings))
            plans.append(_plan(message, {}))
        except ValidationError as exc:
            exc.index = index
            raise
    if not built:
        return SendIds()
    for name in sorted({plan.campaign for plan in plans if plan.campaign}):
        rt.campaigns.check_open(name)
    group = uuid.uuid4().hex
    ids = [uuid.uuid4().hex for _ in built]
    created_at = now_iso()
    written = 0
    try:
        for start in range(0, len(built), PIPELINE_CHUNK):
            with replicated_transaction(rt.redis, rt.settings.min_replicas) as pipe:
                joined: dict[str, int] = {}
                for offset, calls in enumerate(built[start : start + PIPELINE_CHUNK]):
                    plan = plans[start + offset]
                    _write(rt, pipe, ids[start + offset], calls, plan, created_at, group=group)
                    if plan.campaign:
                        count = _recipient_count(calls)
                        joined[plan.campaign] = joined.get(plan.campaign, 0) + count
                for name, count in joined.items():
                    rt.campaigns.add(pipe, name, count)
                pipe.execute()
            written = start + PIPELINE_CHUNK
        with rt.redis.pipeline(transaction=True) as pipe:
            rt.waker.announce(pipe)
            wake = rt.waker.must_wake(pipe.execute())
    except redis.RedisError as exc:
        queued = f"{min(written, len(built))} of {len(built)} messages were queued"
        raise unavailable(rt.settings.status_redis_url, f"enqueue ({queued})", exc) from None
    envelopes = sum(
        len(calls) for calls, plan in zip(built, plans, strict=True) if plan.due is None
    )
    # One drain reads up to a batch call's worth of sends at a time.
    wakeups = (
        min(BULK_WAKEUPS, max(1, math.ceil(envelopes / MAX_BATCH_REQUESTS)))
        if wake and envelopes
        else 0
    )
    for _ in range(wakeups):
        rt.waker.wake_soon()
    scheduled = [plan.due for plan in plans if plan.due is not None]
    if scheduled:
        rt.waker.wake_at(min(scheduled))
    return SendIds(ids, group_id=group)


def get_status(rt: Stores, send_id: str) -> StatusRecord | None:
    """The status record of a send, or None for an unknown id."""
    if not isinstance(send_id, str) or keys.safe_id(send_id) is None:
        return None
    try:
        return rt.store.get(send_id)
    except redis.RedisError as exc:
        raise unavailable(rt.settings.status_redis_url, "read a status record", exc) from None


@dataclass(frozen=True)
class _Plan:
    """Where and when a validated message waits: its campaign, first attempt and expiry."""

    campaign: str | None = None
    stream: str = "transactional"
    account: str | None = None
    due: float | None = None
    send_at: float | None = None
    expires_at: float | None = None


def _plan(message: Mapping[str, Any], celery_options: dict[str, Any]) -> _Plan:
    """The message's plan; ``send_at`` and Celery's ``countdown``/``eta``: the later wins."""
    due = _due(celery_options)
    schedule = schedule_of(message)
    if schedule.send_at is not None and (due is None or schedule.send_at > due):
        due = schedule.send_at
    if schedule.expires_at is not None and due is not None and schedule.expires_at <= due:
        raise ValidationError("expires_at must come after send_at", field="expires_at")
    return _Plan(
        campaign=message.get("campaign"),
        stream=message.get("stream") or "transactional",
        account=message.get("account"),
        due=due,
        send_at=schedule.send_at,
        expires_at=schedule.expires_at,
    )


def _recipient_count(calls: Sequence[ApiCall]) -> int:
    return sum(len(request) for call in calls for request in call.recipients)


def _write(
    rt: Stores,
    pipe: redis.client.Pipeline,
    send_id: str,
    calls: Sequence[ApiCall],
    plan: _Plan,
    created_at: str,
    *,
    group: str | None = None,
) -> None:
    rt.store.create(
        pipe,
        send_id,
        parts=len(calls),
        created_at=created_at,
        group=group,
        campaign=plan.campaign,
        send_at=plan.send_at,
        expires_at=plan.expires_at,
    )
    note_send(rt, pipe, send_id, calls, campaign=plan.campaign)
    envelopes = envelopes_for(
        calls,
        send_id=send_id,
        stream=plan.stream,
        account=plan.account,
        group=group,
        campaign=plan.campaign,
        expires_at=plan.expires_at,
    )
    for envelope in envelopes:
        if plan.due is None:
            rt.outbox.add(pipe, envelope)
        else:
            rt.outbox.schedule(pipe, envelope, plan.due)
    if plan.due is not None:
        pipe.zadd(rt.keys.scheduled, {send_id: plan.due})
        # The list is of times to come: entries whose time has passed go.
        pipe.zremrangebyscore(rt.keys.scheduled, "-inf", f"({time.time()}")


def _forget(rt: Stores, idem_key: str, send_id: str) -> None:
    try:
        if rt.redis.get(idem_key) == send_id.encode():
            rt.redis.delete(idem_key)
    except redis.RedisError:
        pass


def _due(options: dict[str, Any]) -> float | None:
    """Pop ``countdown``/``eta`` from Celery options: when the first attempt may start."""
    countdown = options.pop("countdown", None)
    eta = options.pop("eta", None)
    if eta is not None:
        if not isinstance(eta, datetime):
            raise ValidationError("eta must be a datetime", field="eta")
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)
        return eta.timestamp()
    if countdown is not None:
        try:
            return time.time() + max(float(countdown), 0.0)
        except (TypeError, ValueError):
            raise ValidationError("countdown must be a number", field="countdown") from None
    return None
