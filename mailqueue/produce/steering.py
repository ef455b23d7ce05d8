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
import json
import time
from typing import TYPE_CHECKING, Any

from mailqueue.core.schedule import parse_when
from mailqueue.deliver.hooks import Endings, OutcomeHooks
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
        match = json.dumps({"campaign": record["name"]}, separators=(",", ":"))[1:-1]
        scheduled = rt.outbox.scheduled(match)
        rt.outbox.move_scheduled([member for member, _ in scheduled], time.time())
    if released or scheduled:
        _wake(rt)
    return record


def cancel_send(rt: Stores, send_id: str) -> StatusRecord:
    """Cancel a send not yet handed to Mailtrap; its waiting parts end ``cancelled``."""
    with translated(rt, "cancel a send"):
        _steerable(rt, send_id)
        if rt.store.cancel(send_id) not in _STEERABLE:
            # A worker claimed it meanwhile: it is on its way to Mailtrap.
            _steerable(rt, send_id)
        rt.redis.zrem(rt.keys.scheduled, send_id)
        scheduled = rt.outbox.scheduled(_id_match(send_id))
        for member, _ in scheduled:
            envelope = rt.outbox.decode_scheduled(member)
            if envelope.send_id != send_id:
                continue
            endings = Endings()
            with rt.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(rt.keys.retry, member)
                recipients = envelope.flat_recipients
                ended = rt.store.finish_unsent(pipe, envelope.ref, recipients, "cancelled")
                endings.add(ended, envelope)
                results = pipe.execute()
            # Its last part ended here, not in a worker: the hooks are told from here.
            OutcomeHooks(rt).announce(endings.finished(results))
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
        rt.redis.hset(
            rt.keys.send(send_id),
            mapping={"not_before": int(due * 1000), "send_at": iso_of(due)},
        )
        members = [
            member
            for member, _ in rt.outbox.scheduled(_id_match(send_id))
            if rt.outbox.decode_scheduled(member).send_id == send_id
        ]
        rt.outbox.move_scheduled(members, due)
        rt.redis.zadd(rt.keys.scheduled, {send_id: due})
        record = rt.store.get(send_id)
    assert record is not None
    rt.waker.wake_at(due)
    return record


def list_scheduled(rt: Stores, limit: int = 100) -> list[dict[str, Any]]:
    """Sends waiting for a time still to come, soonest first, with their state and campaign."""
    with translated(rt, "list scheduled sends"):
        rows: Any = rt.redis.zrangebyscore(
            rt.keys.scheduled, time.time(), "+inf", start=0, num=limit, withscores=True
        )
        found = []
        for member, score in rows:
            send_id = member.decode() if isinstance(member, bytes) else str(member)
            fields: Any = rt.redis.hmget(rt.keys.send(send_id), ["state", "campaign"])
            state = fields[0].decode() if fields[0] else None
            if state not in _STEERABLE:
                continue
            found.append(
                {
                    "id": send_id,
                    "send_at": iso_of(float(score)),
                    "state": state,
                    "campaign": fields[1].decode() if fields[1] else None,
                }
            )
    return found


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


def _id_match(send_id: str) -> str:
    # The envelope's JSON spells its id as "id":"<send id>" (no spaces).
    return json.dumps({"id": send_id}, separators=(",", ":"))[1:-1]


def _wake(rt: Stores) -> None:
    rt.waker.wake_soon()
