"""Dead letters: list the sends that failed for good, put them back in the outbox, or forget them.

A dead letter keeps the envelopes (the API calls the producer built) of every
part that failed, so requeueing sends exactly what was sent before, without
the original message. Requeueing revives each part's status (the send is
``queued`` again, its attempt count kept) before its envelope re-enters the
outbox: a worker that read the envelope first would otherwise find the part
done and drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from mailqueue.errors import ValidationError
from mailqueue.records import ErrorRecord
from mailqueue.store import keys
from mailqueue.store.connection import unavailable

if TYPE_CHECKING:
    from mailqueue.store.outbox import Outbox
    from mailqueue.store.status import StatusStore
    from mailqueue.store.waker import Waker

__all__ = ["DeadLetter", "list_dead_letters", "purge_dead_letters", "requeue_dead_letters"]

log = logging.getLogger("mailqueue.deadletters")

# Large enough for any realistic backlog of failures; keeps one ZRANGE bounded.
ALL = 1_000_000


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered send: when it failed, and its status record's summary."""

    send_id: str
    failed_at: float  # unix seconds
    state: str | None  # None when the status record has expired
    error: ErrorRecord | None


def list_dead_letters(limit: int = 100, *, status: StatusStore, outbox: Outbox) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, oldest first."""
    try:
        rows = outbox.dead_letters(limit=limit)
        letters = []
        for send_id, failed_at in rows:
            record = status.get(send_id)
            letters.append(
                DeadLetter(
                    send_id=send_id,
                    failed_at=failed_at,
                    state=record["state"] if record else None,
                    error=record["error"] if record else None,
                )
            )
    except redis.RedisError as exc:
        raise unavailable(outbox.url, "list dead letters", exc) from None
    return letters


def requeue_dead_letters(
    send_ids: Iterable[str] | None = None,
    *,
    wake: bool = True,
    status: StatusStore,
    outbox: Outbox,
    waker: Waker,
) -> int:
    """Send dead-lettered sends again (all of them when ``send_ids`` is None).

    Returns how many sends were requeued; an id that is not a dead letter is
    skipped. With ``wake`` a worker is woken to deliver them.
    """
    try:
        ids = _resolve(outbox, send_ids)
        requeued = 0
        for send_id in ids:
            envelopes = outbox.exhume(send_id)
            if not envelopes:
                continue
            for envelope in envelopes:
                status.revive(envelope.ref)
            outbox.add_all(envelopes)
            requeued += 1
    except redis.RedisError as exc:
        raise unavailable(outbox.url, "requeue dead letters", exc) from None
    if requeued and wake:
        # The envelopes are safely in the outbox: a broker that cannot take
        # the wake-up only delays them until a drain or a worker's sweep.
        waker.wake_soon()
    return requeued


def purge_dead_letters(send_ids: Sequence[str] | None = None, *, outbox: Outbox) -> int:
    """Forget dead letters (all of them when ``send_ids`` is None); returns how many."""
    try:
        ids = None if send_ids is None else _resolve(outbox, send_ids)
        return outbox.purge_dead(ids)
    except redis.RedisError as exc:
        raise unavailable(outbox.url, "purge dead letters", exc) from None


def _resolve(outbox: Outbox, send_ids: Iterable[str] | None) -> list[str]:
    if send_ids is None:
        return [send_id for send_id, _ in outbox.dead_letters(limit=ALL)]
    ids = list(send_ids)
    for index, send_id in enumerate(ids):
        if not isinstance(send_id, str) or keys.safe_id(send_id) is None:
            raise ValidationError(f"not a send id: {send_id!r}", field=f"send_ids[{index}]")
    return ids
