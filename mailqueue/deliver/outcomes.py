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
from typing import TYPE_CHECKING, Any, Literal

import redis

from mailqueue.core.backoff import compute_backoff
from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.hooks import Endings, OutcomeHooks
from mailqueue.errors import DeliveryError, RateLimited, ReplicationTimeout, TransientDeliveryError
from mailqueue.metrics import instruments as metrics
from mailqueue.store.status import PartResult

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.batch import Batches
    from mailqueue.store.outbox import Outbox
    from mailqueue.store.status import StatusStore

__all__ = ["DrainReport", "Outcomes", "Stage", "part_result", "send_ids", "worker_lost"]

log = logging.getLogger("mailqueue.delivery")

_OUTCOME_METRIC = {"sent": "sent", "partial": "partially_sent", "failed": "failed"}

# Errors of a Redis master that went away (killed, restarting, demoted by a
# failover): the record of an answer is written again once a master is back.
# The record script ignores a part already done, so a write that did land
# is not applied twice.
_FAILOVER_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)
RECORD_RETRY_PAUSE = 0.25
# Given up this long before the lease ends, so that no other worker ever
# takes over a part whose answer may still be written.
LEASE_MARGIN = 0.5


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
    """One stage of a drain, over one configuration's settings, status store and outbox.

    ``hooks`` are told each send's final outcome by the stage whose write made
    it final; ``batches`` opens the pipelines its writes across stores share.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        status: StatusStore,
        outbox: Outbox,
        hooks: OutcomeHooks,
        batches: Batches,
    ) -> None:
        self.settings = settings
        self.store = status
        self.outbox = outbox
        self.hooks = hooks
        self.batches = batches


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

        Under Sentinel the writes wait for a replica (``min_replicas``), once
        for the whole call: a master lost right after would otherwise forget
        what Mailtrap accepted, and the part would go out again wherever it
        cannot be looked up in Email Logs.
        """
        extras = counts if counts is not None else [{}] * len(group)
        # Until its lease ends the part is still this worker's: a master lost
        # meanwhile is waited out, not made to forget Mailtrap's answer.
        give_up_at = (
            min((e.lease_ends for e in group if e.lease_ends is not None), default=0.0)
            - LEASE_MARGIN
        )
        while True:
            endings = Endings()
            answers: list[Any] = []
            try:
                self._record_all(group, parts, extras, doubts, endings, answers)
                break
            except ReplicationTimeout as exc:
                # The writes are on the master: only a failover in the next moments
                # loses them, and then the part is claimed again as a dead worker's.
                log.warning("sends %s recorded, not yet replicated: %s", send_ids(group), exc)
                break
            except _FAILOVER_ERRORS as exc:
                if time.monotonic() + RECORD_RETRY_PAUSE >= give_up_at:
                    raise
                log.warning(
                    "sends %s: Redis cannot record the answer yet (%s); trying again",
                    send_ids(group),
                    type(exc).__name__,
                )
                time.sleep(RECORD_RETRY_PAUSE)
        self.hooks.announce(endings.finished(answers))

    def _record_all(
        self,
        group: Sequence[Envelope],
        parts: Sequence[PartResult],
        extras: Sequence[Mapping[str, int]],
        doubts: int,
        endings: Endings,
        answers: list[Any],
    ) -> None:
        """Write the outcomes; ``answers`` gets the pipeline's answers once it executed."""
        with self.batches(min_replicas=self.settings.min_replicas) as writes:
            pipe = writes.pipe
            written = [
                (e.ref, replace(p, withheld=e.withheld) if e.withheld else p, e.flat_recipients)
                for e, p in zip(group, parts, strict=True)
            ]
            recorded = self.store.record_all(pipe, written)
            for envelope, part, extra, one in zip(group, parts, extras, recorded, strict=True):
                endings.add(one, envelope)
                for name, amount in extra.items():
                    self.store.count(pipe, envelope.send_id, name, amount)
                if part.outcome == "failed":
                    self.outbox.bury(pipe, envelope, time.time())
            if doubts:
                self.count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)
        answers.extend(writes.answers)

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
        self._fail_with(group, [exc.as_record()] * len(group), report, doubts)
        log.warning("sends %s failed: %s", send_ids(group), exc)

    def _fail_with(
        self,
        group: Sequence[Envelope],
        errors: Sequence[Mapping[str, Any]],
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        parts = [
            PartResult(
                "failed", {r: None for request in e.to_send.recipients for r in request}, error
            )
            for e, error in zip(group, errors, strict=True)
        ]
        self.finish(group, parts, doubts=doubts)
        report.add(failed=len(group))
        metrics.count_sends("failed", len(group))

    # -- the retry budget ------------------------------------------------

    def spend(
        self, envelope: Envelope, exc: DeliveryError, *, retry_after: float | None = None
    ) -> bool:
        """Count a try of ``envelope`` that ended without an answer settling it.

        Every such try, whatever ended it (a 5xx, a 429, a reset, a timeout, a
        lost answer the logs did not show, a worker that died mid-call), spends
        one of the part's ``max_retries + 1`` tries and sets when the next may
        start: exponential backoff with jitter, never past the send's expiry.
        The envelope carries the count, the time and the error until it is
        queued again. Answers whether a try is left.
        """
        envelope.attempt += 1
        envelope.last_error = dict(exc.as_record())
        delay = compute_backoff(
            envelope.attempt,
            base=self.settings.retry_backoff,
            cap=self.settings.retry_backoff_max,
            retry_after=retry_after,
        )
        now = time.time()
        due = now + delay
        if envelope.expires_at is not None:
            # A retry due after the send's expiry would only find it expired then.
            due = min(due, max(envelope.expires_at, now))
        envelope.resend_at = due
        return not self.spent(envelope)

    def spent(self, envelope: Envelope) -> bool:
        """Whether ``envelope``'s tries are all used up."""
        return envelope.attempt > self.settings.max_retries

    def tries_left(self, envelope: Envelope) -> int:
        """Calls ``envelope``'s budget still allows."""
        return max(self.settings.max_retries + 1 - envelope.attempt, 0)

    def give_up(self, group: Sequence[Envelope], report: DrainReport) -> None:
        """End doubtful parts whose budget is spent ``failed`` with their last error.

        Their last call may still have been accepted (logged later than the
        look-ups): each counts a possible duplicate, and the send is listed for
        ``mailqueue reconcile``.
        """
        errors = [e.last_error or worker_lost().as_record() for e in group]
        self._fail_with(group, errors, report, doubts=1)
        self.store.list_doubtful([envelope.send_id for envelope in group])
        log.warning(
            "sends %s failed: no try left, and Email Logs do not show the last one",
            send_ids(group),
        )

    def retry_later(
        self,
        group: Sequence[Envelope],
        exc: TransientDeliveryError,
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        """Spend a try of each part of ``group``: schedule its next with backoff, or fail it."""
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        going: list[Envelope] = []
        spent: list[Envelope] = []
        for envelope in group:
            has_more = self.spend(envelope, exc, retry_after=retry_after)
            (going if has_more else spent).append(envelope)
        if spent:
            self.fail(spent, exc, report, doubts)
        if not going:
            return
        # Every doubt of the call is counted, not only the last error's.
        # One due for the call's parts, each at least its own backoff: a
        # coalesced call comes back as one call, not as many small ones.
        due = max(e.resend_at or time.time() for e in going)
        for envelope in going:
            envelope.resend_at = due
        self._retry(going, exc, due, report, doubts=doubts, waiting_for="retry")
        delay = due - time.time()
        log.info(
            "sends %s retry in %.1f s (%d tries left): %s",
            send_ids(going),
            max(delay, 0.0),
            min(self.tries_left(e) for e in going),
            exc,
        )

    def doubt_later(
        self, group: Sequence[Envelope], started: float, exc: DeliveryError, report: DrainReport
    ) -> None:
        """The call may have reached Mailtrap: look it up after the settle delay, not resend now.

        The try is spent as any other that ended unanswered; the look-up is made
        even when it was the last, as finding the message settles the part.
        """
        for envelope in group:
            self.spend(envelope, exc)
        due = time.time() + self.settings.reconcile_settle
        self._retry(group, exc, due, report, doubtful_since=started, waiting_for="look-up")
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
        due: float | Sequence[float],
        report: DrainReport,
        **put_off: Any,
    ) -> None:
        """Put ``group`` off until ``due`` (one for all, or one each) for another attempt."""
        self.put_off(group, exc.as_record(), due, **put_off)
        report.add(retried=len(group))
        metrics.count_sends("retried", len(group))

    def defer(self, group: Sequence[Envelope], wait: float) -> None:
        """Hold claimed envelopes in the queue for ``wait`` seconds: a volume cap is reached.

        The call their claim counted in ``attempts`` was not made.
        """
        self.put_off(group, None, time.time() + wait, uncounted=True)
        log.info("%d send(s) held %.0f s by the volume caps", len(group), wait)

    def put_off(
        self,
        group: Sequence[Envelope],
        error: Mapping[str, Any] | None,
        due: float | Sequence[float],
        *,
        doubts: int = 0,
        doubtful_since: float | None = None,
        looked: bool = False,
        waiting_for: Literal["retry", "look-up"] | None = None,
        uncounted: bool = False,
    ) -> None:
        """Put claimed envelopes back in the queue until ``due``, ``error`` their last error.

        ``due``: one time for all, or one per envelope; ``doubts``: possible
        duplicates to count on each send; ``doubtful_since``: when their call
        started that may have reached Mailtrap; ``looked``: one more Email Logs
        look-up came back without an answer; ``waiting_for``: what the status
        record says they wait for (held back only, without an error: nothing);
        ``uncounted``: the call their claim counted was not made.
        """
        dues = [due] * len(group) if isinstance(due, int | float) else list(due)
        with self.batches() as writes:
            pipe = writes.pipe
            for envelope, when in zip(group, dues, strict=True):
                if doubtful_since is not None:
                    self.store.mark_doubtful(pipe, envelope.send_id, envelope.part, doubtful_since)
                if looked:
                    self.store.note_look(pipe, envelope.send_id, envelope.part)
                self.store.mark_retrying(
                    pipe,
                    envelope.ref,
                    error,
                    when,
                    False,
                    waiting_for=waiting_for,
                    tries_left=self.tries_left(envelope) if error or waiting_for else None,
                )
                self.outbox.schedule(pipe, envelope, when)
                if uncounted:
                    self.store.count(pipe, envelope.send_id, "attempts", -1)
            if doubts:
                self.count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)

    def withdraw(self, group: Sequence[Envelope]) -> None:
        """Give back claimed envelopes whose campaign stopped before their call started.

        They go back to their stream, where the next claim holds or ends them;
        the call their claim counted in ``attempts`` was not made.
        """
        with self.batches() as writes:
            for envelope in group:
                self.store.mark_retrying(writes.pipe, envelope.ref, None, None, False)
                self.store.count(writes.pipe, envelope.send_id, "attempts", -1)
                self.outbox.add(writes.pipe, envelope)
            self.outbox.ack(writes.pipe, group)

    def count_doubts(
        self, group: Sequence[Envelope], doubts: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Count ``doubts`` possible duplicates on every send of ``group``."""
        if pipe is None:
            with self.batches(transaction=False) as writes:
                self.count_doubts(group, doubts, writes.pipe)
            return
        for envelope in group:
            self.store.count_duplicates(pipe, envelope.send_id, doubts)


def worker_lost() -> TransientDeliveryError:
    """The error of a try whose worker died before Mailtrap's answer was recorded."""
    return TransientDeliveryError(
        "the worker making this call stopped before its answer was recorded",
        maybe_delivered=True,
    )


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
