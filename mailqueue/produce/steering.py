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
from mailqueue.deliver.hooks import OutcomeHooks
from mailqueue.errors import ValidationError
from mailqueue.records import StatusRecord
from mailqueue.store.connection import redis_errors
from mailqueue.store.keys import safe_id
from mailqueue.store.status import iso_of

if TYPE_CHECKING:
    from mailqueue.store.campaigns import CampaignRecord
    from mailqueue.store.stores import Stores

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


def translated(rt: Stores, doing: str) -> contextlib.AbstractContextManager[None]:
    """Turn a Redis error into ``BrokerUnavailable`` naming the masked URL: these calls' edge."""
    return redis_errors(rt.settings.status_redis_url, doing=doing)


def get_campaign(rt: Stores, name: str) -> CampaignRecord | None:
    with translated(rt, "read a campaign"):
        return rt.campaigns.get(name)


def pause_campaign(rt: Stores, name: str) -> CampaignRecord:
    with translated(rt, "pause a campaign"):
        return rt.campaigns.pause(name)


def resume_campaign(rt: Stores, name: str) -> CampaignRecord:
    with translated(rt, "resume a campaign"):
        record = rt.campaigns.resume(name)
        released = rt.outbox.release(record["name"])
    if released:
        _wake(rt)
    return record


def cancel_campaign(rt: Stores, name: str) -> CampaignRecord:
    with translated(rt, "cancel a campaign"):
        record = rt.campaigns.cancel(name)
        released = rt.outbox.release(record["name"])
        # Scheduled parts end now rather than at their time.
        moved = rt.outbox.move_waiting(rt.outbox.campaign_waiting(record["name"]), time.time())
    if released or moved:
        _wake(rt)
    return record


def cancel_send(rt: Stores, send_id: str) -> StatusRecord:
    """Cancel a send not yet handed to Mailtrap; its waiting parts end ``cancelled``."""
    with translated(rt, "cancel a send"):
        _steerable(rt, send_id)
        if rt.store.cancel(send_id) not in _STEERABLE:
            # A worker claimed it meanwhile: it is on its way to Mailtrap.
            _steerable(rt, send_id)
        rt.store.unschedule(send_id)
        finished = rt.steering.end_waiting(send_id, "cancelled")
        # Its last part ended here, not in a worker: the hooks are told from here.
        OutcomeHooks(rt).announce(finished)
        record = rt.store.get(send_id)
    assert record is not None
    # Parts already in a stream end ``cancelled`` when a worker meets them.
    _wake(rt)
    return record


def reschedule_send(rt: Stores, send_id: str, when: Any) -> StatusRecord:
    """Hold a send not yet handed to Mailtrap until ``when``."""
    due = parse_when(when, "when")
    with translated(rt, "reschedule a send"):
        _steerable(rt, send_id)
        rt.store.hold_until(send_id, due)
        rt.outbox.move_waiting([send_id], due)
        record = rt.store.get(send_id)
    assert record is not None
    rt.waker.wake_at(due)
    return record


def list_scheduled(rt: Stores, limit: int = 100) -> list[dict[str, Any]]:
    """Sends waiting for a time still to come, soonest first, with their state and campaign."""
    with translated(rt, "list scheduled sends"):
        rows = rt.store.scheduled(limit)
    return [
        {"id": send_id, "send_at": iso_of(due), "state": state, "campaign": campaign}
        for send_id, due, state, campaign in rows
        if state in _STEERABLE
    ]


def _steerable(rt: Stores, send_id: str) -> None:
    if not isinstance(send_id, str) or safe_id(send_id) is None:
        raise ValidationError("not a send id", field="send_id")
    state = rt.store.state(send_id)
    if state is None:
        raise ValidationError(f"no send with id {send_id!r}", field="send_id")
    if state not in _STEERABLE:
        raise ValidationError(
            f"send {send_id} is {state}: only a send not yet handed to Mailtrap can change",
            field="send_id",
        )


def _wake(rt: Stores) -> None:
    rt.waker.wake_soon()
