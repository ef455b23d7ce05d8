"""Steering what is queued: pause, resume and cancel campaigns; cancel and reschedule sends.

Each call changes a record in Redis; workers read those records when they
claim a part (``StatusStore.claim``) and once more just before each call
(``Poster.post``), so a pause or a cancel holds fleet-wide as soon as it is
written, apart from calls already under way. Envelopes a paused campaign's
claims parked go back to the outbox on resume or cancel, and a worker is
woken to take them (a cancelled one ends them ``cancelled`` without a call).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from mailqueue.core.schedule import parse_when
from mailqueue.errors import ValidationError
from mailqueue.records import StatusRecord
from mailqueue.store.connection import redis_errors
from mailqueue.store.keys import safe_id
from mailqueue.store.status import iso_of

if TYPE_CHECKING:
    from mailqueue.deliver.hooks import OutcomeHooks
    from mailqueue.store.campaigns import CampaignRecord, CampaignStore
    from mailqueue.store.outbox import Outbox
    from mailqueue.store.status import StatusStore
    from mailqueue.store.steering import SteeringStore
    from mailqueue.store.waker import Waker

__all__ = [
    "cancel_campaign",
    "cancel_send",
    "get_campaign",
    "list_scheduled",
    "pause_campaign",
    "reschedule_send",
    "resume_campaign",
    "translated",
]

# States in which a send has not been handed to Mailtrap (or only partly, and
# its remaining parts wait): the ones cancel and reschedule act on.
_STEERABLE = ("queued", "retrying")


def translated(url: str, doing: str) -> contextlib.AbstractContextManager[None]:
    """Turn a Redis error into ``BrokerUnavailable`` naming the masked ``url``: their edge."""
    return redis_errors(url, doing=doing)


def get_campaign(name: str, *, campaigns: CampaignStore) -> CampaignRecord | None:
    with translated(campaigns.url, "read a campaign"):
        return campaigns.get(name)


def pause_campaign(name: str, *, campaigns: CampaignStore) -> CampaignRecord:
    with translated(campaigns.url, "pause a campaign"):
        return campaigns.pause(name)


def resume_campaign(
    name: str, *, campaigns: CampaignStore, outbox: Outbox, waker: Waker
) -> CampaignRecord:
    with translated(campaigns.url, "resume a campaign"):
        record = campaigns.resume(name)
        _let_go(record, outbox=outbox, waker=waker)
    return record


def cancel_campaign(
    name: str, *, campaigns: CampaignStore, outbox: Outbox, waker: Waker
) -> CampaignRecord:
    with translated(campaigns.url, "cancel a campaign"):
        record = campaigns.cancel(name)
        # Scheduled parts end now rather than at their time.
        _let_go(record, outbox=outbox, waker=waker, scheduled_now=True)
    return record


def _let_go(
    record: CampaignRecord, *, outbox: Outbox, waker: Waker, scheduled_now: bool = False
) -> None:
    """Put a campaign's parked envelopes back (its scheduled parts due now too); wake a worker."""
    moved = outbox.release(record["name"])
    if scheduled_now:
        moved += outbox.move_waiting(outbox.campaign_waiting(record["name"]), time.time())
    if moved:
        waker.wake_soon()


def cancel_send(
    send_id: str,
    *,
    status: StatusStore,
    steering: SteeringStore,
    waker: Waker,
    hooks: OutcomeHooks,
) -> StatusRecord:
    """Cancel a send not yet handed to Mailtrap; its waiting parts end ``cancelled``.

    ``hooks`` are told when its last part ends here rather than in a worker.
    """
    with translated(status.url, "cancel a send"):
        _steerable(status, send_id)
        if status.cancel(send_id) not in _STEERABLE:
            # A worker claimed it meanwhile: it is on its way to Mailtrap.
            _steerable(status, send_id)
        status.unschedule(send_id)
        finished = steering.end_waiting(send_id, "cancelled")
        # Its last part ended here, not in a worker: the hooks are told from here.
        hooks.announce(finished)
        record = status.get(send_id)
    assert record is not None
    # Parts already in a stream end ``cancelled`` when a worker meets them.
    waker.wake_soon()
    return record


def reschedule_send(
    send_id: str, when: Any, *, status: StatusStore, outbox: Outbox, waker: Waker
) -> StatusRecord:
    """Hold a send not yet handed to Mailtrap until ``when``."""
    due = parse_when(when, "when")
    with translated(status.url, "reschedule a send"):
        _steerable(status, send_id)
        status.hold_until(send_id, due)
        outbox.move_waiting([send_id], due)
        record = status.get(send_id)
    assert record is not None
    waker.wake_at(due)
    return record


def list_scheduled(limit: int = 100, *, status: StatusStore) -> list[dict[str, Any]]:
    """Sends waiting for a time still to come, soonest first, with their state and campaign."""
    with translated(status.url, "list scheduled sends"):
        rows = status.scheduled(limit)
    return [
        {"id": send_id, "send_at": iso_of(due), "state": state, "campaign": campaign}
        for send_id, due, state, campaign in rows
        if state in _STEERABLE
    ]


def _steerable(status: StatusStore, send_id: str) -> None:
    if not isinstance(send_id, str) or safe_id(send_id) is None:
        raise ValidationError("not a send id", field="send_id")
    state = status.state(send_id)
    if state is None:
        raise ValidationError(f"no send with id {send_id!r}", field="send_id")
    if state not in _STEERABLE:
        raise ValidationError(
            f"send {send_id} is {state}: only a send not yet handed to Mailtrap can change",
            field="send_id",
        )
