"""What becomes of claimed envelopes, each outcome written with its acknowledgement in one pipeline.

A call's answer is recorded part by part (``sent``, ``partial``, ``failed``;
what failed stays as a dead letter). A transient failure is scheduled for a
later attempt with exponential backoff until the attempts run out; a call that
may have reached Mailtrap is marked doubtful, to be looked up in Email Logs
after the settle delay (``settling.py``). Envelopes held by the volume caps,
or given back by a campaign that stopped, return to the outbox unrecorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import redis

from . import metrics
from .backoff import compute_backoff
from .envelope import Envelope
from .errors import DeliveryError, RateLimited, TransientDeliveryError
from .outcome_hooks import Endings, OutcomeHooks
from .payload import ApiCall
from .responses import RequestResult
from .status import PartResult

if TYPE_CHECKING:
    from .client import Client

__all__ = ["DrainReport", "Outcomes", "Stage", "part_result", "send_ids"]

log = logging.getLogger("mailqueue.delivery")

_OUTCOME_METRIC = {"sent": "sent", "partial": "partially_sent", "failed": "failed"}


@dataclass
class DrainReport:
    calls: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    reconciled: int = 0  # parts recorded from Email Logs instead of being sent again
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to the counters; calls in flight report from their own threads."""
        with self._lock:
            for name, amount in counts.items():
                setattr(self, name, getattr(self, name) + amount)


class Stage:
    """One stage of a drain, over one client's settings, status store and outbox."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.settings = client.settings
        self.store = client.store
        self.outbox = client.outbox
        # Told each send's final outcome by the stage whose write made it final.
        self.hooks = OutcomeHooks(client)


class Outcomes(Stage):
    """Records what happened to claimed envelopes and acknowledges them."""

    def record(
        self,
        group: Sequence[Envelope],
        call: ApiCall,
        results: list[RequestResult],
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        """Record Mailtrap's answer to ``call``, the call of ``group``."""
        # A coalesced call's request i is envelope i's message alone.
        if len(group) == 1:
            parts = [part_result(results)]
        else:
            parts = [part_result([result]) for result in results]
        self.finish(group, parts, doubts=doubts)
        self.count(report, parts)
        log.debug("%d part(s) recorded after %s", len(group), call.path)

    def finish(
        self,
        group: Sequence[Envelope],
        parts: Sequence[PartResult],
        *,
        doubts: int = 0,
        counts: Sequence[Mapping[str, int]] | None = None,
    ) -> None:
        """Record each envelope's part outcome and acknowledge them all, in one pipeline.

        A failed part is kept as a dead letter; ``doubts`` possible duplicates
        are counted on every send, ``counts`` (one mapping per envelope) on
        each one's own; the sends these writes made final are announced.
        """
        extras = counts if counts is not None else [{}] * len(group)
        endings = Endings()
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope, part, extra in zip(group, parts, extras, strict=True):
                if envelope.withheld:
                    part = replace(part, withheld=envelope.withheld)
                recorded = self.store.record(pipe, envelope.ref, part, envelope.flat_recipients)
                endings.add(recorded, envelope)
                for name, amount in extra.items():
                    self.store.count(pipe, envelope.send_id, name, amount)
                if part.outcome == "failed":
                    self.outbox.bury(pipe, envelope, time.time())
            if doubts:
                self.count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)
            answers = pipe.execute()
        self.hooks.announce(endings.finished(answers))

    def count(self, report: DrainReport, parts: Sequence[PartResult]) -> None:
        """Count recorded parts in the drain's report and the metrics."""
        failed = sum(part.outcome == "failed" for part in parts)
        report.add(failed=failed, sent=len(parts) - failed)
        for part in parts:
            metrics.count_sends(_OUTCOME_METRIC[part.outcome])

    def fail(
        self,
        group: Sequence[Envelope],
        exc: DeliveryError,
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        """End every part of ``group`` ``failed`` with ``exc``, kept as a dead letter."""
        error = exc.as_record()
        parts = [
            PartResult(
                "failed", {r: None for request in e.to_send.recipients for r in request}, error
            )
            for e in group
        ]
        self.finish(group, parts, doubts=doubts)
        report.add(failed=len(group))
        metrics.count_sends("failed", len(group))
        log.warning("sends %s failed: %s", send_ids(group), exc)

    def retry_later(
        self,
        group: Sequence[Envelope],
        exc: TransientDeliveryError,
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        """Schedule ``group`` for its next attempt with backoff, or fail it when none is left."""
        attempt = max(e.attempt for e in group) + 1
        if attempt > self.settings.max_retries:
            self.fail(group, exc, report, doubts)
            return
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        delay = compute_backoff(
            attempt,
            base=self.settings.retry_backoff,
            cap=self.settings.retry_backoff_max,
            retry_after=retry_after,
        )
        due = time.time() + delay
        expiries = [e.expires_at for e in group if e.expires_at is not None]
        if expiries:
            # A retry due after the send's expiry would only find it expired then.
            due = min(due, max(min(expiries), time.time()))
        for envelope in group:
            envelope.attempt = attempt
        # Every doubt of the call is counted, not only the last error's.
        self._retry(group, exc, due, report, doubts=doubts)
        log.info("sends %s retry %d in %.1f s: %s", send_ids(group), attempt, delay, exc)

    def doubt_later(
        self, group: Sequence[Envelope], started: float, exc: DeliveryError, report: DrainReport
    ) -> None:
        """The call may have reached Mailtrap: look it up after the settle delay, not resend now."""
        due = time.time() + self.settings.reconcile_settle
        for envelope in group:
            envelope.attempt += 1
        self._retry(group, exc, due, report, doubtful_since=started)
        log.info(
            "sends %s: outcome unknown (%s); looking it up in Email Logs in %.1f s",
            send_ids(group),
            exc,
            self.settings.reconcile_settle,
        )

    def _retry(
        self,
        group: Sequence[Envelope],
        exc: DeliveryError,
        due: float,
        report: DrainReport,
        **put_off: Any,
    ) -> None:
        """Put ``group`` off until ``due`` for another attempt, after ``exc``."""
        self.put_off(group, exc.as_record(), due, **put_off)
        report.add(retried=len(group))
        metrics.count_sends("retried", len(group))

    def defer(self, group: Sequence[Envelope], wait: float) -> None:
        """Hold claimed envelopes in the queue for ``wait`` seconds: a volume cap is reached."""
        self.put_off(group, None, time.time() + wait)
        log.info("%d send(s) held %.0f s by the volume caps", len(group), wait)

    def put_off(
        self,
        group: Sequence[Envelope],
        error: Mapping[str, Any] | None,
        due: float,
        *,
        doubts: int = 0,
        doubtful_since: float | None = None,
        looked: bool = False,
    ) -> None:
        """Put claimed envelopes back in the queue until ``due``, ``error`` their last error.

        ``doubts``: possible duplicates to count on each send; ``doubtful_since``:
        when their call started that may have reached Mailtrap; ``looked``: one
        more Email Logs look-up came back without an answer.
        """
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                if doubtful_since is not None:
                    self.store.mark_doubtful(pipe, envelope.send_id, envelope.part, doubtful_since)
                if looked:
                    self.store.note_look(pipe, envelope.send_id, envelope.part)
                self.store.mark_retrying(pipe, envelope.ref, error, due, False)
                self.outbox.schedule(pipe, envelope, due)
            if doubts:
                self.count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)
            pipe.execute()

    def withdraw(self, group: Sequence[Envelope]) -> None:
        """Give back claimed envelopes whose campaign stopped before their call started.

        They go back to their stream, where the next claim holds or ends them.
        """
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                self.store.mark_retrying(pipe, envelope.ref, None, None, False)
                self.outbox.add(pipe, envelope)
            self.outbox.ack(pipe, group)
            pipe.execute()

    def count_doubts(
        self, group: Sequence[Envelope], doubts: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Count ``doubts`` possible duplicates on every send of ``group``."""
        if pipe is None:
            with self.client.redis.pipeline(transaction=False) as own:
                self.count_doubts(group, doubts, own)
                own.execute()
            return
        for envelope in group:
            self.store.count_duplicates(pipe, envelope.send_id, doubts)


def send_ids(group: Sequence[Envelope]) -> str:
    """The send ids of ``group``, for a log line."""
    return ",".join(envelope.send_id for envelope in group)


def part_result(results: Sequence[RequestResult]) -> PartResult:
    """The outcome of one part from the results of its requests."""
    recipients: dict[str, str | None] = {}
    errors = []
    for result in results:
        recipients.update(result.message_ids)
        if not result.ok:
            errors.append(result.error or "rejected")
    if not errors:
        return PartResult("sent", recipients)
    outcome = "failed" if len(errors) == len(results) else "partial"
    error = {"kind": "permanent", "status_code": 200, "message": "; ".join(errors)[:500]}
    return PartResult(outcome, recipients, error)  # type: ignore[arg-type]
