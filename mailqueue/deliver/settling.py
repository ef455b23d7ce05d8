"""Settling doubtful envelopes: parts whose last call may have reached Mailtrap unanswered.

When reconciling is on, such a part comes back after the settle delay and is
looked up in Email Logs (``reconcile/lookup.py``) before anything is sent again:
what the logs show is recorded ``sent`` with no call; what they do not show,
after a second look, is sent again and counted a possible duplicate; when the
logs cannot answer, the part is sent again as it would be without reconciling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailqueue.core.envelope import Envelope
from mailqueue.core.routing import Route
from mailqueue.deliver.claims import call_deadline, lease_for
from mailqueue.deliver.outcomes import DrainReport, Outcomes, part_result, send_ids
from mailqueue.deliver.posting import Poster
from mailqueue.errors import EmailLogsBusy, EmailLogsUnavailable
from mailqueue.metrics import instruments as metrics
from mailqueue.reconcile.lookup import LOOKS_BEFORE_RESEND, Doubtful, PartLookup, Reconciler

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.batch import Batches
    from mailqueue.store.status import StatusStore

__all__ = ["Settler"]

log = logging.getLogger("mailqueue.delivery")


class Settler:
    """Looks doubtful parts up in Email Logs, then records them or sends them again.

    Through ``outcomes`` it records what the logs show and puts off what they
    do not; through ``poster`` it sends that again.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        status: StatusStore,
        batches: Batches,
        poster: Poster,
        outcomes: Outcomes,
        reconciler: Reconciler,
    ) -> None:
        self.settings = settings
        self.store = status
        self.batches = batches
        self.poster = poster
        self.outcomes = outcomes
        self.reconciler = reconciler

    def settle(self, doubtful: list[Envelope], report: DrainReport) -> None:
        """Look doubtful parts up in Email Logs, route by route, then record or send them."""
        marks = dict(
            zip(
                [(e.send_id, e.part) for e in doubtful],
                self.store.doubts([(e.send_id, e.part) for e in doubtful]),
                strict=True,
            )
        )
        for route, envelopes in self.poster.routed(doubtful, report, by_lane=False):
            self._look_up(route, envelopes, marks, report)

    def _look_up(
        self,
        route: Route,
        envelopes: list[Envelope],
        marks: dict[tuple[str, int], tuple[float | None, int]],
        report: DrainReport,
    ) -> None:
        if not self.reconciler.enabled_for(route):
            # A sandbox account keeps no Email Logs: send again, as without reconciling.
            self._send_again(route, [(e, None) for e in envelopes], report, fallback=False)
            return
        fallback_since = time.time() - lease_for(self.settings)
        parts = [
            Doubtful(
                e.send_id,
                e.part,
                e.attempt,
                e.call_for(route),
                marks[(e.send_id, e.part)][0] or fallback_since,
            )
            for e in envelopes
        ]
        deadline = call_deadline(self.settings)
        try:
            lookups = self.reconciler.look_up(route, parts, deadline=deadline)
        except EmailLogsBusy as exc:
            metrics.count_reconcile("busy")
            delay = max(exc.retry_after or 0.0, self.settings.reconcile_settle)
            self._look_later(envelopes, time.time() + delay, report, noted=False)
            return
        except EmailLogsUnavailable as exc:
            metrics.count_reconcile("fallback")
            log.warning(
                "sends %s: Email Logs cannot answer (%s); sending again",
                send_ids(envelopes),
                exc,
            )
            self._send_again(route, [(e, None) for e in envelopes], report, fallback=True)
            return
        found: list[tuple[Envelope, PartLookup]] = []
        again: list[Envelope] = []
        resend: list[tuple[Envelope, PartLookup | None]] = []
        for envelope, lookup in zip(envelopes, lookups, strict=True):
            for outcome in ("found", "absent", "unsure"):
                metrics.count_reconcile(outcome, sum(v.outcome == outcome for v in lookup.verdicts))
            looks = marks[(envelope.send_id, envelope.part)][1]
            if not lookup.to_send:
                found.append((envelope, lookup))
            elif looks + 1 < LOOKS_BEFORE_RESEND and not lookup.undecided:
                # Mailtrap may list a message seconds after accepting it: look once more.
                again.append(envelope)
            else:
                resend.append((envelope, lookup))
        if found:
            self._record_found(found, report)
        if again:
            self._look_later(again, [self._last_look_at(e) for e in again], report, noted=True)
        if resend:
            self._send_again(route, resend, report, fallback=False)

    def _last_look_at(self, envelope: Envelope) -> float:
        """When to look a last time: after the settle delay, and not before the part's backoff.

        The look that decides to send again is made just before the resend may
        go, so that the message has had as long as possible to be listed.
        """
        settled = time.time() + self.settings.reconcile_settle
        if self.outcomes.spent(envelope) or envelope.resend_at is None:
            return settled
        return max(settled, envelope.resend_at)

    def _record_found(
        self, found: Sequence[tuple[Envelope, PartLookup]], report: DrainReport
    ) -> None:
        """Every request of these parts is in the logs: record them sent, send nothing."""
        parts = [part_result(lookup.merge([])) for _, lookup in found]
        counts = [
            {"reconciled": len(lookup.found)}
            | ({"possible_duplicates": lookup.copies} if lookup.copies else {})
            for _, lookup in found
        ]
        self.outcomes.finish([envelope for envelope, _ in found], parts, counts=counts)
        report.add(reconciled=len(found))
        self.outcomes.count(report, parts)

    def _look_later(
        self,
        envelopes: Sequence[Envelope],
        due: float | Sequence[float],
        report: DrainReport,
        *,
        noted: bool,
    ) -> None:
        """Look the parts up again at ``due``; their record keeps the error of their last call."""
        self.outcomes.put_off(envelopes, None, due, looked=noted, waiting_for="look-up")
        report.add(retried=len(envelopes))

    def _send_again(
        self,
        route: Route,
        items: Sequence[tuple[Envelope, PartLookup | None]],
        report: DrainReport,
        *,
        fallback: bool,
    ) -> None:
        """Send what the logs did not show (or everything, when they could not answer).

        The try the logs did not settle was spent when its answer was lost: a
        part with no try left ends ``failed`` instead, and one whose backoff
        has not run out waits for it (and is looked up once more then). Each
        part sent again counts a possible duplicate: a message the logs
        listed late, or could not be asked about, goes out twice.
        """
        spent = [e for e, _ in items if self.outcomes.spent(e)]
        if spent:
            self.outcomes.give_up(spent, report)
        now = time.time()
        early = [e for e, _ in items if not self.outcomes.spent(e) and (e.resend_at or 0) > now]
        if early:
            dues = [e.resend_at or now for e in early]
            self.outcomes.put_off(early, None, dues, waiting_for="retry")
            report.add(retried=len(early))
        items = [
            (e, lookup)
            for e, lookup in items
            if not self.outcomes.spent(e) and (e.resend_at or 0) <= now
        ]
        if not items:
            return
        with self.batches(transaction=False) as writes:
            pipe = writes.pipe
            for envelope, lookup in items:
                self.store.count(pipe, envelope.send_id, "possible_duplicates")
                self.store.count(pipe, envelope.send_id, "attempts")
                self.store.forget_looks(pipe, envelope.send_id, envelope.part)
                self.store.note_doubtful(pipe, envelope.send_id)
                if fallback:
                    self.store.count(pipe, envelope.send_id, "reconcile_fallbacks")
                if lookup is not None and lookup.found:
                    self.store.count(pipe, envelope.send_id, "reconciled", len(lookup.found))
        whole = [e for e, lookup in items if lookup is None or not lookup.found]
        for envelope, lookup in items:
            if lookup is not None and lookup.found:
                self.poster.post(route, [envelope], report, lookup)
        for call_route, group in self.poster.calls(whole, report):
            self.poster.post(call_route, group, report)
