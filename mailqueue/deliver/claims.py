"""Claiming envelopes read from the outbox, and steering those that must not be sent now.

A claim (``StatusStore.claim``) leases a part to this worker. What comes back
decides the envelope's way: ``go`` and ``doubt`` go on to a call or to an
Email Logs look-up, with suppressed recipients taken out first; ``lost`` and
``lost_doubt`` (a dead worker's part, whose call spent a try) go on to a
retry with backoff or to a look-up the same way; a part
already done is only acknowledged; a paused campaign's part is held, a
cancelled or expired one ended, one scheduled for later put back; a part
another live worker holds stays pending, to be reclaimed if that worker dies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal, NamedTuple

import redis

from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import without_recipients
from mailqueue.deliver.hooks import Endings, OutcomeHooks
from mailqueue.deliver.outcomes import DrainReport, Stage
from mailqueue.metrics import instruments as metrics
from mailqueue.settings import Settings
from mailqueue.store.batch import Batches
from mailqueue.store.outbox import Outbox
from mailqueue.store.status import Claim, PartResult, StatusStore
from mailqueue.store.suppressions import SuppressionList

__all__ = ["Claimed", "Claimer", "call_deadline", "lease_for"]


def lease_for(settings: Settings) -> float:
    """How long a claim holds a part for this worker."""
    # Shorter than reclaim_idle, so that a part taken over from a dead
    # worker is never refused as still leased.
    return settings.reclaim_idle * 0.9


def call_deadline(settings: Settings) -> float:
    """The ``time.monotonic()`` by which work on a part claimed now must be done."""
    # A live worker always finishes (or gives up) before its lease ends, so
    # no other worker ever takes over a call still in progress.
    margin = settings.connect_timeout + settings.read_timeout + 1
    return time.monotonic() + max(lease_for(settings) - margin, 1.0)


class Claimed(NamedTuple):
    """Claimed envelopes that go on: to a call, to a look-up, or a dead worker's."""

    ready: list[Envelope]  # to send now
    doubtful: list[Envelope]  # to look up in Email Logs first
    lost: list[Envelope]  # a dead worker's: its call spent a try (looked up when reconciling)


# Where each claim that goes on puts its envelope.
_GOING_ON: dict[Claim, str] = {
    "go": "ready",
    "doubt": "doubtful",
    "lost": "lost",
    "lost_doubt": "lost",
}


class Claimer(Stage):
    """Claims envelopes and sorts them: to send, to look up, or steered here and now.

    ``suppressions`` says which recipients are withheld from a claimed call.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        status: StatusStore,
        outbox: Outbox,
        hooks: OutcomeHooks,
        batches: Batches,
        suppressions: SuppressionList,
    ) -> None:
        super().__init__(
            settings=settings, status=status, outbox=outbox, hooks=hooks, batches=batches
        )
        self.suppressions = suppressions

    def claim(self, envelopes: list[Envelope], report: DrainReport) -> Claimed:
        """Claim ``envelopes``; sort those that go on by where they go."""
        suppressed = self._suppressed(envelopes)
        lease_ends = time.monotonic() + lease_for(self.settings)
        claims = self.store.claim(
            [e.ref for e in envelopes],
            lease_for(self.settings),
            reconcile=self.settings.reconcile_enabled,
        )
        claimed = Claimed([], [], [])
        endings = Endings()
        steered = 0
        with self.batches() as writes:
            pipe = writes.pipe
            for envelope, claim in zip(envelopes, claims, strict=True):
                if claim in _GOING_ON:
                    drop = suppressed.get(id(envelope))
                    if drop and not self._withhold(pipe, envelope, drop, endings):
                        steered += 1
                        continue
                    envelope.lease_ends = lease_ends
                    getattr(claimed, _GOING_ON[claim]).append(envelope)
                elif claim == "done":
                    self.outbox.ack(pipe, [envelope])
                    report.add(skipped=1)
                    steered += 1
                elif claim != "busy":
                    self._steer(pipe, envelope, claim, endings)
                    steered += 1
                # "busy": another worker holds a live lease; leave the entry pending
                # so that it is reclaimed if that worker dies.
        if steered:
            self.hooks.announce(endings.finished(writes.answers))
        return claimed

    def _suppressed(self, envelopes: Sequence[Envelope]) -> dict[int, set[str]]:
        """Per envelope (by ``id``), its recipients that must not be mailed."""
        by_stream: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            by_stream.setdefault(envelope.mail_stream, []).append(envelope)
        found: dict[int, set[str]] = {}
        for stream, group in by_stream.items():
            addresses = sorted({a for e in group for a in e.flat_recipients})
            banned = self.suppressions.suppressed(addresses, stream)
            if not banned:
                continue
            for envelope in group:
                drop = banned.intersection(envelope.flat_recipients)
                if drop:
                    found[id(envelope)] = drop
        return found

    def _withhold(
        self, pipe: redis.client.Pipeline, envelope: Envelope, drop: set[str], endings: Endings
    ) -> bool:
        """Take suppressed recipients out of a claimed envelope; False when none is left.

        A part left with no recipient ends ``failed`` (error kind ``suppressed``)
        without a call; its recipients read ``suppressed``.
        """
        counted = envelope.flat_recipients
        call = without_recipients(envelope.call, drop)
        if call is not None:
            kept = {a for request in call.recipients for a in request}
            envelope.withheld = tuple(a for a in counted if a not in kept)
            envelope.outgoing = call
            return True
        error = {
            "kind": "suppressed",
            "status_code": None,
            "message": "every recipient is suppressed",
        }
        result = PartResult(
            "failed", {}, error, withheld=tuple(dict.fromkeys(counted)), withheld_as="suppressed"
        )
        endings.add(self.store.record(pipe, envelope.ref, result, counted), envelope)
        self.outbox.ack(pipe, [envelope])
        metrics.count_sends("failed")
        return False

    def _steer(
        self, pipe: redis.client.Pipeline, envelope: Envelope, claim: Claim, endings: Endings
    ) -> None:
        """Act on a claim that must not send now: hold, end or put off the envelope."""
        if claim == "paused":
            self.outbox.hold(pipe, envelope)
        elif claim in ("cancelled", "expired"):
            outcome: Literal["cancelled", "expired"] = (
                "cancelled" if claim == "cancelled" else "expired"
            )
            recipients = envelope.flat_recipients
            endings.add(self.store.finish_unsent(pipe, envelope.ref, recipients, outcome), envelope)
        elif claim == "later":
            due = self.store.not_before(envelope.send_id) or time.time()
            self.outbox.schedule(pipe, envelope, due)
        self.outbox.ack(pipe, [envelope])
