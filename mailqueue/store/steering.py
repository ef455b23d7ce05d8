"""Steering's writes that span a send's status record and the outbox, each one transaction.

Cancelling a send ends each of its parts that waits in the retry set (for a
retry or for its time): the part leaves the set and is recorded
``cancelled`` together, so that no worker can move it back to a stream in
between and no part is left neither waiting nor ended.
"""

from __future__ import annotations

from typing import Literal

import redis

from mailqueue.core.envelope import Envelope
from mailqueue.store.base import RedisStore, translated
from mailqueue.store.keys import Keys
from mailqueue.store.outbox import Outbox
from mailqueue.store.status import StatusStore

__all__ = ["SteeringStore"]


class SteeringStore(RedisStore):
    """Ends waiting parts unsent, over the status store and the outbox it is handed."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        status: StatusStore,
        outbox: Outbox,
        url: str = "redis",
    ) -> None:
        super().__init__(client, keys, url=url)
        self.status = status
        self.outbox = outbox

    @translated("end a send's waiting parts")
    def end_waiting(
        self, send_id: str, outcome: Literal["cancelled", "expired"] = "cancelled"
    ) -> list[Envelope]:
        """End every part of ``send_id`` waiting in the retry set as ``outcome``.

        Returns the envelopes whose ending made the send final: the outcome
        hooks are told of those by the caller, since no worker will meet them.
        """
        finished = []
        for envelope in self.outbox.waiting_parts(send_id):
            with self.redis.pipeline(transaction=True) as pipe:
                self.outbox.take_waiting(pipe, envelope)
                recorded = self.status.finish_unsent(
                    pipe, envelope.ref, envelope.flat_recipients, outcome
                )
                results = pipe.execute()
            if recorded.became_final(results):
                finished.append(envelope)
        return finished
