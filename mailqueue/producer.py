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
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import redis

from . import keys
from .connection import replicated_transaction
from .errors import BrokerUnavailable, ValidationError
from .groups import SendIds
from .outbox import Envelope
from .payload import MAX_BATCH_REQUESTS, ApiCall, build_payload
from .records import StatusRecord
from .status import now_iso

if TYPE_CHECKING:
    from .client import Client

__all__ = ["enqueue", "enqueue_many", "get_status"]

log = logging.getLogger("mailqueue.producer")

# enqueue_many writes this many messages per Redis round trip.
PIPELINE_CHUNK = 500
# How many drains a bulk enqueue starts at once; more join while a backlog lasts.
BULK_WAKEUPS = 4


def enqueue(
    rt: Client,
    message: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    send_id: str | None = None,
    **celery_options: Any,
) -> str:
    """Validate and queue one message; returns its send id.

    With an ``idempotency_key`` seen before (within the status TTL) nothing is
    queued and the first send's id is returned. ``countdown`` or ``eta`` delay
    the first attempt; other Celery options go to the wake-up task. ``send_id``
    chooses the id (letters, digits and ``._@:+=-``) instead of a new one.
    """
    calls = build_payload(message, rt.settings)
    due = _due(celery_options)
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
            _write(rt, pipe, send_id, calls, due=due, created_at=now_iso())
            if due is None:
                rt.waker.announce(pipe)
            results = pipe.execute()
    except redis.RedisError as exc:
        if idem_key is not None:
            _forget(rt, idem_key, send_id)
        raise BrokerUnavailable(f"cannot reach Redis to enqueue: {type(exc).__name__}") from None
    if due is not None:
        rt.waker.wake_at(due, **celery_options)
    else:
        rt.waker.after_enqueue(results, task_id=send_id, **celery_options)
    return send_id


def enqueue_many(rt: Client, messages: Iterable[Mapping[str, Any]]) -> SendIds:
    """Validate every message, then queue them all with pipelined writes; ids in order.

    A bad message raises ValidationError naming its index, and nothing is queued.
    The sends share a group id (the list's ``group_id``, ``group`` in their
    records) whose per-state counts (``groups.get_group``) follow the progress.
    """
    built: list[list[ApiCall]] = []
    for index, message in enumerate(messages):
        try:
            built.append(build_payload(message, rt.settings))
        except ValidationError as exc:
            exc.index = index
            raise
    if not built:
        return SendIds()
    group = uuid.uuid4().hex
    ids = [uuid.uuid4().hex for _ in built]
    created_at = now_iso()
    written = 0
    try:
        for start in range(0, len(built), PIPELINE_CHUNK):
            with replicated_transaction(rt.redis, rt.settings.min_replicas) as pipe:
                for offset, calls in enumerate(built[start : start + PIPELINE_CHUNK]):
                    _write(rt, pipe, ids[start + offset], calls, created_at=created_at, group=group)
                pipe.execute()
            written = start + PIPELINE_CHUNK
        with rt.redis.pipeline(transaction=True) as pipe:
            rt.waker.announce(pipe)
            wake = rt.waker.must_wake(pipe.execute())
    except redis.RedisError as exc:
        raise BrokerUnavailable(
            f"cannot reach Redis to enqueue ({min(written, len(built))} of {len(built)} "
            f"messages were queued): {type(exc).__name__}"
        ) from None
    envelopes = sum(len(calls) for calls in built)
    # One drain reads up to a batch call's worth of sends at a time.
    wakeups = min(BULK_WAKEUPS, max(1, math.ceil(envelopes / MAX_BATCH_REQUESTS))) if wake else 0
    for _ in range(wakeups):
        rt.waker.wake_soon()
    return SendIds(ids, group_id=group)


def get_status(rt: Client, send_id: str) -> StatusRecord | None:
    """The status record of a send, or None for an unknown id."""
    if not isinstance(send_id, str) or keys.safe_id(send_id) is None:
        return None
    try:
        return rt.store.get(send_id)
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"cannot reach Redis: {type(exc).__name__}") from None


def _write(
    rt: Client,
    pipe: redis.client.Pipeline,
    send_id: str,
    calls: Sequence[ApiCall],
    *,
    created_at: str,
    due: float | None = None,
    group: str | None = None,
) -> None:
    rt.store.create(pipe, send_id, parts=len(calls), created_at=created_at, group=group)
    for part, call in enumerate(calls):
        envelope = Envelope(send_id=send_id, part=part, call=call, group=group)
        if due is None:
            rt.outbox.add(pipe, envelope)
        else:
            rt.outbox.schedule(pipe, envelope, due)


def _forget(rt: Client, idem_key: str, send_id: str) -> None:
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
