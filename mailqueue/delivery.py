"""The worker's side: drain the outbox, call Mailtrap, record what happened.

A drain reads envelopes, transactional lane first and then the campaigns in
turn, claims their parts (a part already done is only acknowledged), builds
each call with this worker's settings (the route: URL, token, sandbox inbox),
combines waiting single sends to the same route into one ``batch`` call when
coalescing is on, and hands each call to a small pool of threads, so that
several calls are in flight per process while the drain goes on reading.
Each call goes through the transport (which waits on the fleet rate limiter,
in the call's lane, and retries transient errors in-process for a few
seconds), then records every part's outcome and acknowledges its envelope in
one pipeline. What still fails transiently is scheduled for a later attempt
with exponential backoff; what fails permanently, or runs out of attempts, is
``failed`` and kept as a dead letter.

A call that may have reached Mailtrap without its answer reaching us is not
retried blindly when reconciling is on: its parts are marked doubtful and
come back after the settle delay, to be looked up in Email Logs first
(``reconcile.py``); only what the logs do not show is sent again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import redis

from . import metrics
from .backoff import compute_backoff
from .calltag import Tag, tag_call
from .connection import redis_errors
from .envelope import Envelope
from .errors import (
    ConfigurationError,
    DeliveryError,
    EmailLogsBusy,
    EmailLogsUnavailable,
    PermanentDeliveryError,
    RateLimited,
    TransientDeliveryError,
)
from .inflight import InFlight
from .payload import BATCH_WRAPPER_BYTES, MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, ApiCall, coalesce
from .ratelimit import FleetRateLimiter
from .reconcile import LOOKS_BEFORE_RESEND, Doubtful, PartLookup, Reconciler, remaining_call
from .responses import RequestResult
from .routing import Lane, Route, resolve_route
from .status import Claim, PartResult
from .transport import Transport, Withdrawn
from .withheld import without_recipients

if TYPE_CHECKING:
    from .client import Client

__all__ = ["DrainReport", "Drainer", "group_calls"]

log = logging.getLogger("mailqueue.delivery")

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


class Drainer:
    """One per worker process: owns the transports (pooled HTTP sessions), limiters and threads.

    ``transport`` (tests) serves every route; otherwise each route gets a
    transport of its own, built on first use.
    """

    def __init__(self, client: Client, transport: Transport | None = None) -> None:
        self.client = client
        self.settings = client.settings
        self.store = client.store
        self.outbox = client.outbox
        self.waker = client.waker
        self.keys = client.keys
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._shared_transport = transport
        self._transports: dict[tuple[object, ...], Transport] = {}
        self._routes: dict[tuple[str, str | None, str | None], Route | ConfigurationError] = {}
        self._parts_lock = threading.Lock()
        self._flight = InFlight(max(1, self.settings.calls_in_flight))
        self.reconciler = Reconciler(client)
        self._last_campaign = ""
        self._moved_at = -MOVE_DUE_INTERVAL
        self._beat_at = -HEARTBEAT_INTERVAL

    def close(self) -> None:
        self._flight.close()
        self.reconciler.close()
        for transport in self._transports.values():
            transport.close()
        if self._shared_transport is not None:
            self._shared_transport.close()

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
        try:
            while True:
                closing = closing or time.monotonic() >= stop_at or self._flight.failed()
                if closing and (self._flight.failed() or not self._flight.running):
                    # Out of budget: leave, then hand what is left over to a fresh
                    # task. Looking before leaving would miss work queued in between
                    # by a producer that saw this drain alive and woke nobody.
                    self._flight.join()
                    self.waker.leave(self.consumer)
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
                if self._flight.running:
                    self._flight.wait(POLL_INTERVAL)
                    self._heartbeat()
                    continue
                # Leave first, then look once more: a producer that saw this
                # drain alive published no wake-up (see waker.py).
                self.waker.leave(self.consumer)
                self.outbox.move_due()
                if self.outbox.waiting() == 0:
                    break
                self._heartbeat(force=True)
        finally:
            self._flight.join()
            self.waker.leave(self.consumer)
            self._schedule_next_retry()
        return report

    def _start_transactional(self, report: DrainReport) -> bool:
        if not self._flight.can_start("transactional"):
            return False
        count = MAX_BATCH_REQUESTS if self.settings.coalesce else 1
        envelopes = self.outbox.read(self.consumer, self.keys.outbox, count)
        if not envelopes:
            envelopes = self.outbox.read(self.consumer, self.keys.outbox_batch, 1)
        if not envelopes:
            return False
        if len(envelopes) >= MAX_BATCH_REQUESTS or envelopes[0].is_batch:
            self.waker.call_for_help()
        self._deliver(envelopes, report)
        return True

    def _start_bulk(self, report: DrainReport) -> bool:
        """Read the next campaign after the one read last, so campaigns take turns."""
        if not self._flight.can_start("bulk"):
            return False
        queues = self.outbox.campaign_queues()
        if not queues:
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

    def _schedule_next_retry(self) -> None:
        """Make sure a wake-up comes for the next retry, or for envelopes a dead worker left."""
        candidates = [self.outbox.next_retry_due(), self.outbox.next_reclaim_due()]
        due = min((c for c in candidates if c is not None), default=None)
        if due is not None:
            self.waker.wake_at(due)

    # -- one read -------------------------------------------------------

    @property
    def lease(self) -> float:
        # Shorter than reclaim_idle, so that a part taken over from a dead
        # worker is never refused as still leased.
        return self.settings.reclaim_idle * 0.9

    def _deliver(self, envelopes: list[Envelope], report: DrainReport) -> None:
        lease = self.lease
        suppressed = self._suppressed(envelopes)
        claims = self.store.claim(
            [e.ref for e in envelopes], lease, reconcile=self.settings.reconcile_enabled
        )
        ready: list[Envelope] = []
        doubtful: list[Envelope] = []
        with self.client.redis.pipeline(transaction=True) as pipe:
            steered = 0
            for envelope, claim in zip(envelopes, claims, strict=True):
                if claim in ("go", "doubt"):
                    drop = suppressed.get(id(envelope))
                    if drop and not self._withhold(pipe, envelope, drop):
                        steered += 1
                        continue
                    (ready if claim == "go" else doubtful).append(envelope)
                elif claim == "done":
                    self.outbox.ack(pipe, [envelope])
                    report.add(skipped=1)
                    steered += 1
                elif claim != "busy":
                    self._steer(pipe, envelope, claim)
                    steered += 1
                # "busy": another worker holds a live lease; leave the entry pending
                # so that it is reclaimed if that worker dies.
            if steered:
                pipe.execute()
        if doubtful:
            self._flight.start(
                doubtful[0].lane, functools.partial(self._settle_doubts, doubtful, report)
            )
        for route, group in self._calls(ready, report):
            self._flight.start(group[0].lane, functools.partial(self._post, route, group, report))

    def _route(self, envelope: Envelope) -> Route | ConfigurationError:
        """The envelope's route under this worker's settings, or why it has none."""
        facts = (envelope.mail_stream, envelope.account, envelope.legacy_sandbox)
        route = self._routes.get(facts)
        if route is None:
            try:
                route = resolve_route(
                    self.settings,
                    stream=envelope.mail_stream,
                    account=envelope.account,
                    fallback_sandbox=envelope.legacy_sandbox,
                )
            except ConfigurationError as exc:
                route = exc
            self._routes[facts] = route
        return route

    def _calls(
        self, ready: list[Envelope], report: DrainReport
    ) -> list[tuple[Route, list[Envelope]]]:
        """Group envelopes into calls, each to one route (``group_calls`` per route and lane).

        A coalesced call never mixes streams, tokens or sandboxes, nor lanes.
        """
        by_target: dict[tuple[object, ...], tuple[Route, list[Envelope]]] = {}
        for envelope in ready:
            route = self._route(envelope)
            if isinstance(route, ConfigurationError):
                # A worker missing this account or token keeps the mail for
                # later: its settings may be fixed, and queued mail follows them.
                error = TransientDeliveryError(f"cannot route this message: {route}")
                self._retry_later([envelope], error, report)
                continue
            by_target.setdefault((*route.target, envelope.lane), (route, []))[1].append(envelope)
        return [
            (route, group)
            for route, envelopes in by_target.values()
            for group in group_calls(envelopes, coalescing=self.settings.coalesce)
        ]

    def _transport(self, route: Route, lane: Lane) -> Transport:
        """The route's transport for ``lane``: its session, and the lane's share of the limit."""
        if self._shared_transport is not None:
            return self._shared_transport
        key = (*route.target, lane)
        with self._parts_lock:
            transport = self._transports.get(key)
            if transport is None:
                limiter = FleetRateLimiter(
                    self.client.redis, route, lane=lane, key_space=self.keys
                )
                transport = Transport(
                    self.settings, limiter, route=route, observer=metrics.observe_api_request
                )
                self._transports[key] = transport
            return transport

    def _suppressed(self, envelopes: Sequence[Envelope]) -> dict[int, set[str]]:
        """Per envelope (by ``id``), its recipients that must not be mailed."""
        by_stream: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            by_stream.setdefault(envelope.mail_stream, []).append(envelope)
        found: dict[int, set[str]] = {}
        for stream, group in by_stream.items():
            addresses = sorted({a for e in group for a in e.flat_recipients})
            banned = self.client.suppressions.suppressed(addresses, stream)
            if not banned:
                continue
            for envelope in group:
                drop = banned.intersection(envelope.flat_recipients)
                if drop:
                    found[id(envelope)] = drop
        return found

    def _withhold(self, pipe: redis.client.Pipeline, envelope: Envelope, drop: set[str]) -> bool:
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
        self.store.record(pipe, envelope.ref, result, counted)
        self.outbox.ack(pipe, [envelope])
        metrics.count_sends("failed")
        return False

    def _steer(self, pipe: redis.client.Pipeline, envelope: Envelope, claim: Claim) -> None:
        """Act on a claim that must not send now: hold, end or put off the envelope."""
        if claim == "paused":
            self.outbox.hold(pipe, envelope)
        elif claim in ("cancelled", "expired"):
            outcome: Literal["cancelled", "expired"] = (
                "cancelled" if claim == "cancelled" else "expired"
            )
            self.store.finish_unsent(pipe, envelope.ref, envelope.flat_recipients, outcome)
        elif claim == "later":
            due = self.store.not_before(envelope.send_id) or time.time()
            self.outbox.schedule(pipe, envelope, due)
        self.outbox.ack(pipe, [envelope])

    def _post(
        self,
        route: Route,
        group: list[Envelope],
        report: DrainReport,
        lookup: PartLookup | None = None,
    ) -> None:
        """Post one call for ``group``; ``lookup``: only the requests Email Logs did not show."""
        if lookup is not None:
            (envelope,) = group
            call = remaining_call(envelope.call_for(route), lookup.to_send)
            tags = [
                Tag(envelope.send_id, envelope.part, i, envelope.attempt) for i in lookup.to_send
            ]
        elif len(group) == 1:
            envelope = group[0]
            call = envelope.call_for(route)
            tags = [
                Tag(envelope.send_id, envelope.part, i, envelope.attempt)
                for i in range(len(call.recipients))
            ]
        else:
            # Request i of the coalesced call is envelope i's message alone.
            merged = coalesce([envelope.call_for(route) for envelope in group])
            call = dataclasses.replace(merged, path=route.endpoint("batch"))
            tags = [Tag(e.send_id, e.part, 0, e.attempt) for e in group]
        reconciling = self.reconciler.enabled_for(route)
        if reconciling:
            call, _ = tag_call(call, tags)
        started = time.time()
        report.add(calls=1)
        # A live worker always finishes (or gives up) before its lease ends, so
        # no other worker ever takes over a call still in progress.
        margin = self.settings.connect_timeout + self.settings.read_timeout + 1
        deadline = time.monotonic() + max(self.lease - margin, 1.0)
        doubts = 0

        def note(error: DeliveryError) -> None:
            # An attempt that may have reached Mailtrap makes any later success
            # of this call a possible duplicate, even one tenacity got at once.
            nonlocal doubts
            doubts += error.maybe_delivered

        limiter = self.client.caps
        caps = limiter.caps.for_account(route.hourly_cap, route.daily_cap)
        wait = limiter.take(route.limiter_key, group[0].lane, messages_in(call), caps=caps)
        if wait > 0:
            self._defer(group, wait)
            return
        campaigns = {e.campaign for e in group if e.campaign}

        def proceed() -> bool:
            # Read again once the limiter let the call go: a pause or a cancel
            # written while it waited holds for it too.
            states = self.client.campaigns.states(campaigns)
            return all(state == "running" for state in states.values())

        try:
            if campaigns and not proceed():
                raise Withdrawn()
            results = self._transport(route, group[0].lane).send(
                call,
                deadline=deadline,
                on_error=note,
                proceed=proceed if campaigns else None,
                give_up=_unknown_outcome if reconciling else None,
            )
        except Withdrawn:
            self._withdraw(group)
            return
        except DeliveryError as exc:
            if reconciling and _unknown_outcome(exc):
                self._doubt_later(group, started, exc, report)
                return
            self._failed_call(route, group, exc, report, doubts)
            return
        if lookup is not None:
            results = lookup.merge(results)
        self._record(group, call, results, report, doubts)

    def _failed_call(
        self,
        route: Route,
        group: list[Envelope],
        exc: DeliveryError,
        report: DrainReport,
        doubts: int,
    ) -> None:
        if isinstance(exc, PermanentDeliveryError):
            if len(group) > 1 and exc.status_code in (400, 413, 422):
                if doubts:
                    self._count_doubts(group, doubts)
                # One bad request must not fail its companions: send each alone.
                for envelope in group:
                    self._post(route, [envelope], report)
                return
            self._fail(group, exc, report, doubts)
        elif isinstance(exc, TransientDeliveryError):
            self._retry_later(group, exc, report, doubts)
        else:
            self._fail(group, exc, report, doubts)

    # -- unknown outcomes ------------------------------------------------

    def _doubt_later(
        self, group: Sequence[Envelope], started: float, exc: DeliveryError, report: DrainReport
    ) -> None:
        """The call may have reached Mailtrap: look it up after the settle delay, not resend now."""
        due = time.time() + self.settings.reconcile_settle
        error = exc.as_record()
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                envelope.attempt += 1
                self.store.mark_doubtful(pipe, envelope.send_id, envelope.part, started)
                self.store.mark_retrying(pipe, envelope.ref, error, due, False)
                self.outbox.schedule(pipe, envelope, due)
            self.outbox.ack(pipe, group)
            pipe.execute()
        report.add(retried=len(group))
        metrics.count_sends("retried", len(group))
        log.info(
            "sends %s: outcome unknown (%s); looking it up in Email Logs in %.1f s",
            ",".join(e.send_id for e in group),
            exc,
            self.settings.reconcile_settle,
        )

    def _settle_doubts(self, doubtful: list[Envelope], report: DrainReport) -> None:
        """Look doubtful parts up in Email Logs, route by route, then record or send them."""
        marks = dict(
            zip(
                [(e.send_id, e.part) for e in doubtful],
                self.store.doubts([(e.send_id, e.part) for e in doubtful]),
                strict=True,
            )
        )
        by_route: dict[tuple[object, ...], tuple[Route, list[Envelope]]] = {}
        for envelope in doubtful:
            route = self._route(envelope)
            if isinstance(route, ConfigurationError):
                error = TransientDeliveryError(f"cannot route this message: {route}")
                self._retry_later([envelope], error, report)
                continue
            by_route.setdefault(route.target, (route, []))[1].append(envelope)
        for route, envelopes in by_route.values():
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
        fallback_since = time.time() - self.lease
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
        margin = self.settings.connect_timeout + self.settings.read_timeout + 1
        deadline = time.monotonic() + max(self.lease - margin, 1.0)
        try:
            lookups = self.reconciler.look_up(route, parts, deadline=deadline)
        except EmailLogsBusy as exc:
            metrics.count_reconcile("busy")
            delay = max(exc.retry_after or 0.0, self.settings.reconcile_settle)
            self._look_later(envelopes, delay, report, noted=False)
            return
        except EmailLogsUnavailable as exc:
            metrics.count_reconcile("fallback")
            log.warning(
                "sends %s: Email Logs cannot answer (%s); sending again",
                ",".join(e.send_id for e in envelopes),
                exc,
            )
            self._send_again(route, [(e, None) for e in envelopes], report, fallback=True)
            return
        found: list[tuple[Envelope, PartLookup]] = []
        again: list[Envelope] = []
        resend: list[tuple[Envelope, PartLookup | None]] = []
        for envelope, lookup in zip(envelopes, lookups, strict=True):
            for outcome in ("found", "absent", "unsure"):
                metrics.count_reconcile(
                    outcome, sum(v.outcome == outcome for v in lookup.verdicts)
                )
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
            self._look_later(again, self.settings.reconcile_settle, report, noted=True)
        if resend:
            self._send_again(route, resend, report, fallback=False)

    def _record_found(
        self, found: Sequence[tuple[Envelope, PartLookup]], report: DrainReport
    ) -> None:
        """Every request of these parts is in the logs: record them sent, send nothing."""
        parts = [_part_result(lookup.merge([])) for _, lookup in found]
        with self.client.redis.pipeline(transaction=True) as pipe:
            for (envelope, lookup), part in zip(found, parts, strict=True):
                if envelope.withheld:
                    part = replace(part, withheld=envelope.withheld)
                self.store.record(pipe, envelope.ref, part, envelope.flat_recipients)
                self.store.count(pipe, envelope.send_id, "reconciled", len(lookup.found))
                if lookup.copies:
                    self.store.count(pipe, envelope.send_id, "possible_duplicates", lookup.copies)
            self.outbox.ack(pipe, [envelope for envelope, _ in found])
            pipe.execute()
        report.add(reconciled=len(found))
        self._count(report, parts)

    def _look_later(
        self, envelopes: Sequence[Envelope], delay: float, report: DrainReport, *, noted: bool
    ) -> None:
        due = time.time() + delay
        error = {"kind": "transient", "message": "answer lost; looking it up in Email Logs"}
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in envelopes:
                if noted:
                    self.store.note_look(pipe, envelope.send_id, envelope.part)
                self.store.mark_retrying(pipe, envelope.ref, error, due, False)
                self.outbox.schedule(pipe, envelope, due)
            self.outbox.ack(pipe, envelopes)
            pipe.execute()
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

        Each such part counts a possible duplicate: a message the logs listed
        late, or could not be asked about, goes out twice.
        """
        with self.client.redis.pipeline(transaction=False) as pipe:
            for envelope, lookup in items:
                self.store.count(pipe, envelope.send_id, "possible_duplicates")
                self.store.note_doubtful(pipe, envelope.send_id)
                if fallback:
                    self.store.count(pipe, envelope.send_id, "reconcile_fallbacks")
                if lookup is not None and lookup.found:
                    self.store.count(pipe, envelope.send_id, "reconciled", len(lookup.found))
            pipe.execute()
        whole = [e for e, lookup in items if lookup is None or not lookup.found]
        for envelope, lookup in items:
            if lookup is not None and lookup.found:
                self._post(route, [envelope], report, lookup)
        for call_route, group in self._calls(whole, report):
            self._post(call_route, group, report)

    def _defer(self, group: Sequence[Envelope], wait: float) -> None:
        """Hold claimed envelopes in the queue for ``wait`` seconds: a volume cap is reached."""
        due = time.time() + wait
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                self.store.mark_retrying(pipe, envelope.ref, None, due, False)
                self.outbox.schedule(pipe, envelope, due)
            self.outbox.ack(pipe, group)
            pipe.execute()
        log.info("%d send(s) held %.0f s by the volume caps", len(group), wait)

    def _withdraw(self, group: Sequence[Envelope]) -> None:
        """Give back claimed envelopes whose campaign stopped before their call started.

        They go back to their stream, where the next claim holds or ends them.
        """
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                self.store.mark_retrying(pipe, envelope.ref, None, None, False)
                self.outbox.add(pipe, envelope)
            self.outbox.ack(pipe, group)
            pipe.execute()

    def _count_doubts(
        self, group: Sequence[Envelope], doubts: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Count ``doubts`` possible duplicates on every send of ``group``."""
        if pipe is None:
            with self.client.redis.pipeline(transaction=False) as own:
                self._count_doubts(group, doubts, own)
                own.execute()
            return
        for envelope in group:
            self.store.count_duplicates(pipe, envelope.send_id, doubts)

    # -- outcomes -------------------------------------------------------

    def _record(
        self,
        group: Sequence[Envelope],
        call: ApiCall,
        results: list[RequestResult],
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        # A coalesced call's request i is envelope i's message alone.
        if len(group) == 1:
            parts = [_part_result(results)]
        else:
            parts = [_part_result([result]) for result in results]
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope, part in zip(group, parts, strict=True):
                if envelope.withheld:
                    part = replace(part, withheld=envelope.withheld)
                self.store.record(pipe, envelope.ref, part, envelope.flat_recipients)
                if part.outcome == "failed":
                    self.outbox.bury(pipe, envelope, time.time())
            if doubts:
                self._count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)
            pipe.execute()
        self._count(report, parts)
        log.debug("%d part(s) recorded after %s", len(group), call.path)

    def _count(self, report: DrainReport, parts: Sequence[PartResult]) -> None:
        failed = sum(part.outcome == "failed" for part in parts)
        report.add(failed=failed, sent=len(parts) - failed)
        for part in parts:
            metrics.count_sends(_OUTCOME_METRIC[part.outcome])

    def _fail(
        self,
        group: Sequence[Envelope],
        exc: DeliveryError,
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        error = exc.as_record()
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                recipients = {r: None for request in envelope.to_send.recipients for r in request}
                result = PartResult("failed", recipients, error, withheld=envelope.withheld)
                self.store.record(pipe, envelope.ref, result, envelope.flat_recipients)
                self.outbox.bury(pipe, envelope, time.time())
            if doubts:
                self._count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)
            pipe.execute()
        report.add(failed=len(group))
        metrics.count_sends("failed", len(group))
        log.warning("sends %s failed: %s", ",".join(e.send_id for e in group), exc)

    def _retry_later(
        self,
        group: Sequence[Envelope],
        exc: TransientDeliveryError,
        report: DrainReport,
        doubts: int = 0,
    ) -> None:
        attempt = max(e.attempt for e in group) + 1
        if attempt > self.settings.max_retries:
            self._fail(group, exc, report, doubts)
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
        error = exc.as_record()
        with self.client.redis.pipeline(transaction=True) as pipe:
            for envelope in group:
                envelope.attempt = attempt
                # Doubts are counted below, all of them, not only the last error's.
                self.store.mark_retrying(pipe, envelope.ref, error, due, False)
                self.outbox.schedule(pipe, envelope, due)
            if doubts:
                self._count_doubts(group, doubts, pipe)
            self.outbox.ack(pipe, group)
            pipe.execute()
        report.add(retried=len(group))
        metrics.count_sends("retried", len(group))
        log.info(
            "sends %s retry %d in %.1f s: %s",
            ",".join(e.send_id for e in group),
            attempt,
            delay,
            exc,
        )


def group_calls(
    ready: Sequence[Envelope],
    *,
    coalescing: bool,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[list[Envelope]]:
    """Group envelopes into API calls: batch calls alone, single sends coalesced.

    A coalesced group holds at most ``max_requests`` sends whose call bodies,
    with the batch wrapper (each request is one separator more, and shared
    keys only shrink it), fit in ``max_bytes``.
    """
    groups: list[list[Envelope]] = []
    current: list[Envelope] = []
    size = BATCH_WRAPPER_BYTES
    for envelope in ready:
        if envelope.is_batch or not coalescing:
            groups.append([envelope])
            continue
        weight = envelope.body_bytes + 1
        if current and (len(current) >= max_requests or size + weight > max_bytes):
            groups.append(current)
            current, size = [], BATCH_WRAPPER_BYTES
        current.append(envelope)
        size += weight
    if current:
        groups.append(current)
    return groups


def messages_in(call: ApiCall) -> int:
    """Messages a call asks Mailtrap to send: one per recipient, as Mailtrap gives ids."""
    return sum(len(request) for request in call.recipients)


# Server errors after which Mailtrap may have accepted the call: a 503 says the
# request was not handled, a 500 or a gateway's 502 / 504 does not.
_MAYBE_HANDLED = frozenset({500, 502, 504})


def _unknown_outcome(error: DeliveryError) -> bool:
    """Whether a failed call may have reached Mailtrap: a lost or unreadable answer, a 5xx."""
    return error.maybe_delivered or error.status_code in _MAYBE_HANDLED


def _part_result(results: Sequence[RequestResult]) -> PartResult:
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
