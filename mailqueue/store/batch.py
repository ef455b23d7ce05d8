"""Writes of several stores that must land together: one pipeline, run when the block ends.

The drain's stages record an outcome, acknowledge its envelope and schedule
its retry in one transaction; each store queues its own commands on
``Batch.pipe`` (keys stay spelled in the stores), and the block's end runs
them. Under Sentinel, ``min_replicas`` makes the end wait for replicas too
(``connection.replicated_transaction``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import redis

from mailqueue.store.connection import replicated_transaction

__all__ = ["Batch", "Batches", "batch", "batches_over"]


class Batch:
    """Commands queued by stores on one pipeline; ``answers`` holds theirs once it ran."""

    def __init__(self, pipe: redis.client.Pipeline) -> None:
        self.pipe = pipe
        self.answers: list[Any] = []

    def __len__(self) -> int:
        return len(self.pipe)


@contextmanager
def batch(
    client: redis.Redis, *, transaction: bool = True, min_replicas: int = 0
) -> Iterator[Batch]:
    """Queue writes on one pipeline (a MULTI/EXEC one with ``transaction``); run it on leaving.

    Nothing runs when nothing was queued, or when the block raises.
    """
    if min_replicas > 0:
        with replicated_transaction(client, min_replicas) as pipe:
            queued = Batch(pipe)
            yield queued
            if len(pipe):
                queued.answers = pipe.execute()
        return
    with client.pipeline(transaction=transaction) as pipe:
        queued = Batch(pipe)
        yield queued
        if len(pipe):
            queued.answers = pipe.execute()


class Batches(Protocol):
    """Opens a ``batch`` over one Redis client: what a stage writing across stores is handed."""

    def __call__(
        self, *, transaction: bool = True, min_replicas: int = 0
    ) -> AbstractContextManager[Batch]: ...


def batches_over(client: redis.Redis) -> Batches:
    """``batch`` bound to ``client``, so that its user holds no Redis client of its own."""

    def opened(*, transaction: bool = True, min_replicas: int = 0) -> AbstractContextManager[Batch]:
        return batch(client, transaction=transaction, min_replicas=min_replicas)

    return opened
