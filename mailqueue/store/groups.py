"""Groups of sends: the sends of one ``enqueue_many`` call, and how far they have come.

Each send of a bulk enqueue carries the group's id in its status record, and
the group keeps per-state counts that the status store moves with every
transition, so a campaign's progress is one read, whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import redis

from mailqueue.records import FINAL_STATES, GroupRecord
from mailqueue.store import keys
from mailqueue.store.connection import unavailable
from mailqueue.store.status import StatusStore

__all__ = [
    "FINAL_STATES",
    "BatchProgress",
    "GroupProgress",
    "SendIds",
    "get_batch_progress",
    "get_group",
]


class SendIds(list[str]):
    """The send ids of one ``enqueue_many`` call, in order, and the group they share.

    A plain list to every caller that wants one; ``group_id`` names the group
    for ``get_group`` (None when nothing was queued).
    """

    def __init__(self, ids: Iterable[str] = (), group_id: str | None = None) -> None:
        super().__init__(ids)
        self.group_id = group_id


@dataclass(frozen=True)
class GroupProgress:
    """Per-state counts of a group's sends."""

    group_id: str
    counts: GroupRecord

    @property
    def by_state(self) -> Mapping[str, int]:
        """The counts by state name: every field of a group record is a count."""
        return cast(Mapping[str, int], self.counts)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def finished(self) -> int:
        """Sends in a final state."""
        return sum(count for state, count in self.by_state.items() if state in FINAL_STATES)

    @property
    def done(self) -> bool:
        return self.finished >= self.total

    def summary(self) -> dict[str, object]:
        """The group's id, its number of sends, how many are final, and the per-state counts."""
        return {
            "group": self.group_id,
            "sends": self.total,
            "finished": self.finished,
            "counts": dict(self.counts),
        }


def get_group(group_id: str, *, status: StatusStore) -> GroupProgress | None:
    """The progress of a group, or None for an unknown (or expired) group id."""
    if keys.safe_id(group_id) is None:
        return None
    try:
        counts = status.group_counts(group_id)
    except redis.RedisError as exc:
        raise unavailable(status.url, "read a group's progress", exc) from None
    if not counts:
        return None
    return GroupProgress(group_id=group_id, counts=counts)


@dataclass(frozen=True)
class BatchProgress:
    """Per-status counts of one batch send's recipients, and the send's state."""

    send_id: str
    state: str
    recipients: Mapping[str, int]

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


def get_batch_progress(send_id: str, *, status: StatusStore) -> BatchProgress | None:
    """How far one (batch) send has come, or None for an unknown send id.

    Recipients appear as each batch call is answered; the send's own state
    says when the last one was.
    """
    if keys.safe_id(send_id) is None:
        return None
    try:
        state = status.state(send_id)
        counts = status.recipient_counts(send_id) if state is not None else {}
    except redis.RedisError as exc:
        raise unavailable(status.url, "read a send's progress", exc) from None
    if state is None:
        return None
    return BatchProgress(send_id=send_id, state=state, recipients=counts)
