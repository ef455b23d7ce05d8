"""Posting claimed envelopes to Mailtrap: their routes, their calls, and each call's outcome.

Each envelope's call is rendered from its queued message and routed with this
worker's settings (the body; the route: URL, token, sandbox inbox), so that
mail already queued follows the workers' settings and rendering. Waiting
single sends to the same route and lane ride one ``batch`` call when
coalescing is on. A call waits on the volume caps, then
goes through the route's transport (the fleet rate limiter in the call's
lane, and in-process retries of transient errors for a few seconds); its
answer, or its failure, is handed to ``Outcomes``. A failure after which
Mailtrap may have accepted the call is not retried blindly when reconciling
is on: the call's parts become doubtful, to be looked up in Email Logs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mailqueue.core.calltag import MAX_TAG_GROWTH, Tag, tag_call
from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import (
    BATCH_WRAPPER_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    ApiCall,
    coalesce,
)
from mailqueue.core.routing import Lane, Route, resolve_route
from mailqueue.deliver.claims import call_deadline
from mailqueue.deliver.outcomes import DrainReport, Outcomes
from mailqueue.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from mailqueue.mailtrap.transport import Sender, Transport, Withdrawn
from mailqueue.metrics import instruments as metrics
from mailqueue.reconcile.lookup import PartLookup, Reconciler, remaining_call

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.campaigns import CampaignStore
    from mailqueue.store.caps import CapLimiter
    from mailqueue.store.fleet_limits import LimitNotices
    from mailqueue.store.ratelimit import FleetRateLimiter

__all__ = ["Poster", "RateLimiters", "group_calls", "messages_in"]

#: The fleet rate limiter of a route's token in a lane, one per route a worker sends through.
RateLimiters = Callable[[Route, Lane], "FleetRateLimiter"]


class Poster:
    """Routes and posts calls; owns the transports (pooled HTTP sessions) and their limiters.

    ``transport`` (tests) serves every route; otherwise each route gets a
    transport of its own, built on first use, over the limiter
    ``rate_limiters`` gives for its route and lane. ``caps`` hold calls
    within the volume caps; ``campaigns`` says whether a campaign still runs;
    ``limit_notices`` notes the limiters this process sends through.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        outcomes: Outcomes,
        reconciler: Reconciler,
        caps: CapLimiter,
        campaigns: CampaignStore,
        rate_limiters: RateLimiters,
        limit_notices: LimitNotices,
        transport: Sender | None = None,
    ) -> None:
        self.settings = settings
        self.outcomes = outcomes
        self.reconciler = reconciler
        self.caps = caps
        self.campaigns = campaigns
        self._rate_limiters = rate_limiters
        self._shared_transport = transport
        self._transports: dict[tuple[object, ...], Transport] = {}
        self._limit_notices = limit_notices
        self._routes: dict[tuple[str, str | None, str | None], Route | ConfigurationError] = {}
        self._parts_lock = threading.Lock()

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        if self._shared_transport is not None:
            self._shared_transport.close()

    def render(self, envelopes: Sequence[Envelope]) -> None:
        """Render each envelope's call with this worker's settings, before its claim reads it.

        A claim takes suppressed recipients out of the rendered call; a
        coalesced call combines the rendered calls of its single sends.
        """
        for envelope in envelopes:
            envelope.render(self.settings)

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

    def routed(
        self, envelopes: Sequence[Envelope], report: DrainReport, *, by_lane: bool
    ) -> list[tuple[Route, list[Envelope]]]:
        """Envelopes grouped by their route's target (and lane, with ``by_lane``).

        An envelope with no route under this worker's settings is retried later.
        """
        groups: dict[tuple[object, ...], tuple[Route, list[Envelope]]] = {}
        for envelope in envelopes:
            route = self._route(envelope)
            if isinstance(route, ConfigurationError):
                # A worker missing this account or token keeps the mail for
                # later: its settings may be fixed, and queued mail follows them.
                error = TransientDeliveryError(f"cannot route this message: {route}")
                self.outcomes.retry_later([envelope], error, report)
                continue
            key = (*route.target, envelope.lane) if by_lane else route.target
            groups.setdefault(key, (route, []))[1].append(envelope)
        return list(groups.values())

    def calls(
        self, ready: Sequence[Envelope], report: DrainReport
    ) -> list[tuple[Route, list[Envelope]]]:
        """Group envelopes into calls, each to one route (``group_calls`` per route and lane).

        A coalesced call never mixes streams, tokens or sandboxes, nor lanes.
        Where calls are tagged, each request keeps room for its tag.
        """
        return [
            (route, group)
            for route, envelopes in self.routed(ready, report, by_lane=True)
            for group in group_calls(
                envelopes,
                coalescing=self.settings.coalesce,
                room_per_request=MAX_TAG_GROWTH if self.reconciler.enabled_for(route) else 0,
            )
        ]

    def _transport(self, route: Route, lane: Lane) -> Sender:
        """The route's transport for ``lane``: its session, and the lane's share of the limit."""
        self._limit_notices.note(route)
        if self._shared_transport is not None:
            return self._shared_transport
        key = (*route.target, lane)
        with self._parts_lock:
            transport = self._transports.get(key)
            if transport is None:
                limiter = self._rate_limiters(route, lane)
                transport = Transport(
                    self.settings, limiter, route=route, observer=metrics.observe_api_request
                )
                self._transports[key] = transport
            return transport

    def post(
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
        deadline = call_deadline(self.settings)
        doubts = 0

        def note(error: DeliveryError) -> None:
            # An attempt that may have reached Mailtrap makes any later success
            # of this call a possible duplicate, even one tenacity got at once.
            nonlocal doubts
            doubts += error.maybe_delivered

        limiter = self.caps
        caps = limiter.caps.for_account(route.hourly_cap, route.daily_cap)
        if len(group) > 1 and lookup is None and caps.any:
            left, frees_in = limiter.room(route.limiter_key, group[0].lane, caps=caps)
            fits = max(within_caps(call, left), 1)
            if fits < len(group):
                # A coalesced call never carries more than the caps have left
                # (Mailtrap's plans refuse mail beyond them): the rest waits.
                report.add(calls=-1)
                self.outcomes.defer(group[fits:], frees_in)
                self.post(route, group[:fits], report)
                return
        wait = limiter.take(route.limiter_key, group[0].lane, messages_in(call), caps=caps)
        if wait > 0:
            self.outcomes.defer(group, wait)
            return
        campaigns = {e.campaign for e in group if e.campaign}

        def proceed() -> bool:
            # Read again once the limiter let the call go: a pause or a cancel
            # written while it waited holds for it too.
            states = self.campaigns.states(campaigns)
            return all(state == "running" for state in states.values())

        try:
            if campaigns and not proceed():
                raise Withdrawn()
            results = self._transport(route, group[0].lane).send(
                call,
                deadline=deadline,
                on_error=note,
                proceed=proceed if campaigns else None,
                give_up=unknown_outcome if reconciling else None,
            )
        except Withdrawn:
            self.outcomes.withdraw(group)
            return
        except DeliveryError as exc:
            if reconciling and unknown_outcome(exc):
                self.outcomes.doubt_later(group, started, exc, report)
                return
            self._failed_call(route, group, exc, report, doubts)
            return
        if lookup is not None:
            results = lookup.merge(results)
        self.outcomes.record(group, call, results, report, doubts)

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
                    self.outcomes.count_doubts(group, doubts)
                # One bad request must not fail its companions: send each alone.
                for envelope in group:
                    self.post(route, [envelope], report)
                return
            self.outcomes.fail(group, exc, report, doubts)
        elif isinstance(exc, TransientDeliveryError):
            self.outcomes.retry_later(group, exc, report, doubts)
        else:
            self.outcomes.fail(group, exc, report, doubts)


def group_calls(
    ready: Sequence[Envelope],
    *,
    coalescing: bool,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_bytes: int = MAX_BATCH_BYTES,
    room_per_request: int = 0,
) -> list[list[Envelope]]:
    """Group envelopes into API calls: batch calls alone, single sends coalesced.

    A coalesced group holds at most ``max_requests`` sends whose call bodies,
    with the batch wrapper (each request is one separator more, and shared
    keys only shrink it) and ``room_per_request`` bytes more each, fit in
    ``max_bytes``.
    """
    groups: list[list[Envelope]] = []
    current: list[Envelope] = []
    size = BATCH_WRAPPER_BYTES
    for envelope in ready:
        if envelope.is_batch or not coalescing:
            groups.append([envelope])
            continue
        weight = envelope.body_bytes + 1 + room_per_request
        if current and (len(current) >= max_requests or size + weight > max_bytes):
            groups.append(current)
            current, size = [], BATCH_WRAPPER_BYTES
        current.append(envelope)
        size += weight
    if current:
        groups.append(current)
    return groups


def within_caps(call: ApiCall, left: int | None) -> int:
    """How many of a call's requests, from the first, fit in ``left`` messages (None: all)."""
    if left is None:
        return len(call.recipients)
    fits = 0
    for request in call.recipients:
        left -= len(request)
        if left < 0:
            break
        fits += 1
    return fits


def messages_in(call: ApiCall) -> int:
    """Messages a call asks Mailtrap to send: one per recipient, as Mailtrap gives ids."""
    return sum(len(request) for request in call.recipients)


# Server errors after which Mailtrap may have accepted the call: a 503 says the
# request was not handled, a 500 or a gateway's 502 / 504 does not.
_MAYBE_HANDLED = frozenset({500, 502, 504})


def unknown_outcome(error: DeliveryError) -> bool:
    """Whether a failed call may have reached Mailtrap: a lost or unreadable answer, a 5xx."""
    return error.maybe_delivered or error.status_code in _MAYBE_HANDLED
