"""The worker's side: drain the outbox, call Mailtrap, record what happened.

A drain reads envelopes, transactional lane first and then the campaigns in
turn, and hands each read on: its claims are taken and steered
(``claims.py``: a part already done is only acknowledged, a paused one held),
then the envelopes to send become calls (``posting.py``: routes, coalescing
of single sends into one ``batch`` call, the transport with its limiter and
in-process retries), and each call's outcome is recorded with its envelope's
acknowledgement in one pipeline (``outcomes.py``: sent, retried with
exponential backoff, or ``failed`` and kept as a dead letter). Calls run on a
small pool of threads, so that several are in flight per process while the
drain goes on reading. With coalescing on, transactional calls are paced
fleet-wide (``pacing.py``): the drain reads the transactional lane only when
its token's next start is due, so each call carries what gathered meanwhile
and steady traffic never spends the window in a burst.

A call that may have reached Mailtrap without its answer reaching us is not
retried blindly when reconciling is on: its parts are marked doubtful and
come back after the settle delay, to be looked up in Email Logs first
(``settling.py``, over ``reconcile/lookup.py``); only what the logs do not show is
sent again.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import MAX_BATCH_REQUESTS
from mailqueue.deliver.claims import Claimer
from mailqueue.deliver.hooks import OutcomeHooks
from mailqueue.deliver.inflight import InFlight
from mailqueue.deliver.outcomes import DrainReport, Outcomes, worker_lost
from mailqueue.deliver.posting import Poster, RateLimiters, group_calls
from mailqueue.deliver.settling import Settler
from mailqueue.mailtrap.transport import Sender
from mailqueue.reconcile.lookup import LimitersFor, Reconciler
from mailqueue.store.connection import redis_errors
from mailqueue.store.pacing import Pacer

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.batch import Batches
    from mailqueue.store.campaigns import CampaignStore
    from mailqueue.store.caps import CapLimiter
    from mailqueue.store.fleet_limits import LimitNotices
    from mailqueue.store.keys import Keys
    from mailqueue.store.outbox import Outbox
    from mailqueue.store.status import StatusStore
    from mailqueue.store.suppressions import SuppressionList
    from mailqueue.store.waker import Waker

__all__ = ["DrainParts", "DrainReport", "Drainer", "group_calls"]

# A drain takes no new work after this many seconds, so that its Celery task
# ends well inside the time limits and the visibility timeout.
DRAIN_BUDGET = 20.0
# While calls are in flight and nothing new was read, the drain looks for new
# work this often: a transactional send queued meanwhile starts within it
# (producers wake nobody while a drain runs).
POLL_INTERVAL = 0.05
# Due retries are moved back into their streams at most this often.
MOVE_DUE_INTERVAL = 0.25
# A running drain renews its heartbeat at most this often (it lasts 30 s).
HEARTBEAT_INTERVAL = 1.0
# With no campaign waiting, a drain looks for one at most this often: steady
# transactional traffic otherwise asked Redis for the campaign list every round.
CAMPAIGN_LOOK_INTERVAL = 0.25


@dataclass(frozen=True)
class DrainParts:
    """What a drain's stages use, as the client hands it down; each stage takes its own share.

    ``rate_limiters``, ``email_logs_limiters`` and ``pacer`` build the fleet
    limiters of a route, of its Email Logs look-ups, and the transactional
    pace (only when coalescing); ``batches`` opens the pipelines that write
    across stores together.
    """

    settings: Settings
    keys: Keys
    status: StatusStore
    outbox: Outbox
    waker: Waker
    suppressions: SuppressionList
    caps: CapLimiter
    campaigns: CampaignStore
    hooks: OutcomeHooks
    batches: Batches
    limit_notices: LimitNotices
    rate_limiters: RateLimiters
    email_logs_limiters: LimitersFor
    pacer: Callable[[], Pacer]


class Drainer:
    """One per worker process: owns the threads, and the parts that claim, post and settle.

    ``transport`` (tests) serves every route; otherwise each route gets a
    transport of its own, built on first use.
    """

    def __init__(self, parts: DrainParts, transport: Sender | None = None) -> None:
        self.settings = settings = parts.settings
        self.status = parts.status
        self.outbox = parts.outbox
        self.waker = parts.waker
        self.keys = parts.keys
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._flight = InFlight(max(1, settings.calls_in_flight))
        self.reconciler = Reconciler(
            settings=settings, status=parts.status, limiters=parts.email_logs_limiters
        )
        self.claims = Claimer(
            settings=settings,
            status=parts.status,
            outbox=parts.outbox,
            hooks=parts.hooks,
            batches=parts.batches,
            suppressions=parts.suppressions,
        )
        self.outcomes = Outcomes(
            settings=settings,
            status=parts.status,
            outbox=parts.outbox,
            hooks=parts.hooks,
            batches=parts.batches,
        )
        self.poster = Poster(
            settings=settings,
            outcomes=self.outcomes,
            reconciler=self.reconciler,
            caps=parts.caps,
            campaigns=parts.campaigns,
            rate_limiters=parts.rate_limiters,
            limit_notices=parts.limit_notices,
            transport=transport,
        )
        self.settler = Settler(
            settings=settings,
            status=parts.status,
            batches=parts.batches,
            poster=self.poster,
            outcomes=self.outcomes,
            reconciler=self.reconciler,
        )
        self._pacer = parts.pacer() if settings.coalesce else None
        self._last_campaign = ""
        self._moved_at = -MOVE_DUE_INTERVAL
        self._beat_at = -HEARTBEAT_INTERVAL
        # Until when the campaign list, found empty, is not asked for again.
        self._no_campaigns_until = 0.0

    def close(self) -> None:
        self._flight.close()
        self.reconciler.close()
        self.poster.close()

    # -- the loop -------------------------------------------------------

    def drain(self, budget: float = DRAIN_BUDGET) -> DrainReport:
        """Deliver what is waiting until the outbox is empty or ``budget`` seconds passed."""
        # Pipelines of this module execute here, outside any store: their
        # errors leave as BrokerUnavailable too (also those of calls in flight,
        # which the drain re-raises).
        with redis_errors(self.settings.status_redis_url, doing="deliver from the outbox"):
            return self._drain(budget)

    def _drain(self, budget: float) -> DrainReport:
        report = DrainReport()
        self.outbox.ensure_group()
        stop_at = time.monotonic() + budget
        self.waker.arrive(self.consumer)
        self._beat_at = time.monotonic()
        closing = False
        # Set once the drain has left for good: leaving again would cost a round trip.
        left = False
        try:
            while True:
                closing = closing or time.monotonic() >= stop_at or self._flight.failed()
                if closing and (self._flight.failed() or not self._flight.running):
                    # Out of budget: leave, then hand what is left over to a fresh
                    # task. Looking before leaving would miss work queued in between
                    # by a producer that saw this drain alive and woke nobody.
                    self._flight.join()
                    self.waker.leave(self.consumer)
                    left = True
                    if self.outbox.waiting():
                        self.waker.wake()
                    break
                if closing:
                    # Bulk calls may still wait on the limiter for seconds: meanwhile
                    # transactional mail is still served, campaigns are not.
                    if not self._start_transactional(report):
                        self._flight.wait(POLL_INTERVAL)
                    self._heartbeat()
                    continue
                self._move_due()
                # Transactional work first, every round: it never waits behind a campaign.
                started = self._start_transactional(report)
                started = self._start_bulk(report) or started
                if started:
                    self._heartbeat()
                    continue
                paced = self._pacer.due() if self._pacer is not None else 0.0
                if self._flight.running or paced:
                    self._flight.wait(min(paced, POLL_INTERVAL) if paced else POLL_INTERVAL)
                    self._heartbeat()
                    continue
                # Leave first, then look once more: a producer that saw this
                # drain alive published no wake-up (see waker.py).
                self.waker.leave(self.consumer)
                self.outbox.move_due()
                if self.outbox.waiting() == 0:
                    left = True
                    break
                self._no_campaigns_until = 0.0  # what waits may be a new campaign
                self._heartbeat(force=True)
        finally:
            self._flight.join()
            if not left:
                self.waker.leave(self.consumer)
            self._schedule_next_retry()
        return report

    def _start_transactional(self, report: DrainReport) -> bool:
        if not self._flight.can_start("transactional"):
            return False
        if self._pacer is not None and self._pacer.due():
            return False
        count = MAX_BATCH_REQUESTS if self.settings.coalesce else 1
        envelopes = self.outbox.read(self.consumer, self.keys.outbox, count)
        if not envelopes:
            envelopes = self.outbox.read(self.consumer, self.keys.outbox_batch, 1)
        if not envelopes:
            return False
        if len(envelopes) >= MAX_BATCH_REQUESTS or envelopes[0].is_batch:
            self.waker.call_for_help()
        self._deliver(envelopes, report, delay=self._pacer.book() if self._pacer else 0.0)
        return True

    def _start_bulk(self, report: DrainReport) -> bool:
        """Read the next campaign after the one read last, so campaigns take turns."""
        if not self._flight.can_start("bulk"):
            return False
        now = time.monotonic()
        if now < self._no_campaigns_until:
            return False
        queues = self.outbox.campaign_queues()
        if not queues:
            self._no_campaigns_until = now + CAMPAIGN_LOOK_INTERVAL
            return False
        start = queues.index(self._last_campaign) + 1 if self._last_campaign in queues else 0
        for queue in queues[start:] + queues[:start]:
            parsed = self.keys.parse_campaign_queue(queue)
            singles = parsed is not None and parsed[1] == "send" and self.settings.coalesce
            envelopes = self.outbox.read(self.consumer, queue, MAX_BATCH_REQUESTS if singles else 1)
            if envelopes:
                self._last_campaign = queue
                self.waker.call_for_help()
                self._deliver(envelopes, report)
                return True
            self.outbox.retire(queue)
        return False

    def _move_due(self) -> None:
        now = time.monotonic()
        if now - self._moved_at >= MOVE_DUE_INTERVAL:
            self._moved_at = now
            self.outbox.move_due()

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._beat_at >= HEARTBEAT_INTERVAL:
            self._beat_at = now
            self.waker.heartbeat(self.consumer)

    def _lost(self, lost: list[Envelope], report: DrainReport) -> list[Envelope]:
        """Parts a dead worker left mid-call: their call spent a try; those to look up.

        Reconciling, each is looked up before anything else (its try spent, so
        that what the logs do not show is sent again only within budget);
        otherwise it waits its backoff, or ends ``failed`` with no try left.
        """
        # Each dead worker's call since the envelope was queued spent a try: a
        # part that kills every worker taking it ends too.
        counts = self.status.lost_calls([(e.send_id, e.part) for e in lost])
        for envelope, count in zip(lost, counts, strict=True):
            envelope.attempt += max(count - 1, 0)
        if not self.settings.reconcile_enabled:
            self.outcomes.retry_later(lost, worker_lost(), report)
            return []
        for envelope in lost:
            self.outcomes.spend(envelope, worker_lost())
        return lost

    def _schedule_next_retry(self) -> None:
        """Make sure a wake-up comes for the next retry, or for envelopes a dead worker left."""
        candidates = [self.outbox.next_retry_due(), self.outbox.next_reclaim_due()]
        due = min((c for c in candidates if c is not None), default=None)
        if due is not None:
            self.waker.wake_at(due)

    def _deliver(self, envelopes: list[Envelope], report: DrainReport, delay: float = 0.0) -> None:
        """Claim ``envelopes`` and start their calls; ``delay``: seconds the calls wait to start."""
        self.poster.render(envelopes)
        ready, doubtful, lost = self.claims.claim(envelopes, report)
        if lost:
            doubtful = doubtful + self._lost(lost, report)
        if doubtful:
            self._flight.start(
                doubtful[0].lane, functools.partial(self.settler.settle, doubtful, report)
            )
        for route, group in self.poster.calls(ready, report):
            call = functools.partial(self.poster.post, route, group, report)
            self._flight.start(
                group[0].lane, functools.partial(_after, delay, call) if delay else call
            )


def _after(delay: float, call: Callable[[], None]) -> None:
    # The pacer booked this start a moment ahead: the call's thread waits for
    # it, the drain goes on reading (what arrives meanwhile rides the next call).
    time.sleep(delay)
    call()
