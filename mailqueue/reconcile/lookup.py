"""Unknown outcomes, looked up in Mailtrap's Email Logs instead of guessed.

Mailtrap has no idempotency key. When a call may have reached Mailtrap
without its answer reaching us (the worker died mid-call; a timeout, a reset
connection, a 5xx or an unreadable answer after the body was sent), the part
is marked doubtful since the call began (``StatusStore.mark_doubtful``, or
the claim of a dead worker's lease) and comes back after the settle delay.
Its next claim answers ``"doubt"``, and the worker asks the Email Logs for
the part's recipients from the call's start up to now: requests found by
their tag are recorded as sent with Mailtrap's message ids and never sent
again; only what is absent is sent, after a second look-up has also found
nothing (Mailtrap may list a message some seconds after accepting it).

When the logs cannot answer (unreachable, token refused), the worker falls
back to sending again and counts a possible duplicate, as it did before it
could look. What is guaranteed and what is not is in RELIABILITY.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailqueue.core.calltag import Tag, tag_call
from mailqueue.core.logmatch import Logged, Pending, Verdict, match_requests
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.core.routing import Route
from mailqueue.mailtrap.email_logs import EmailLogsClient, LogsLimiters, window
from mailqueue.store import keys

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.status import StatusStore

__all__ = [
    "Doubtful",
    "LimitersFor",
    "PartLookup",
    "Reconciler",
    "pending_requests",
    "remaining_call",
]

#: A token's fleet-wide Email Logs limiters, for the route it is read with.
LimitersFor = Callable[[Route], LogsLimiters]

# How many look-ups must find a request absent before it is sent again.
LOOKS_BEFORE_RESEND = 2


@dataclass(frozen=True)
class Doubtful:
    """A part whose earlier call may have reached Mailtrap."""

    send_id: str
    part: int
    attempt: int
    call: ApiCall  # the part's own call
    since: float  # unix seconds: when the earliest such call began


@dataclass(frozen=True)
class PartLookup:
    """What the logs said about each request of one doubtful part."""

    doubtful: Doubtful
    verdicts: list[Verdict]

    @property
    def found(self) -> list[int]:
        return [i for i, v in enumerate(self.verdicts) if v.outcome == "found"]

    @property
    def to_send(self) -> list[int]:
        """Requests still to send: absent, or undecided."""
        return [i for i, v in enumerate(self.verdicts) if v.outcome != "found"]

    @property
    def undecided(self) -> bool:
        return any(v.outcome == "unsure" for v in self.verdicts)

    @property
    def copies(self) -> int:
        """Messages the logs show accepted more than once (by earlier attempts)."""
        return sum(max(v.copies - 1, 0) for v in self.verdicts)

    def merge(self, sent: Sequence[RequestResult]) -> list[RequestResult]:
        """The part's results in request order: found requests from the logs, the rest ``sent``."""
        rest = iter(sent)
        results = []
        for verdict in self.verdicts:
            if verdict.outcome == "found":
                results.append(RequestResult(dict(verdict.message_ids)))
            else:
                results.append(next(rest))
        return results


def pending_requests(doubtful: Doubtful) -> list[Pending]:
    """The requests of a doubtful part as a look-up sees them: tag, tagged or not, subject."""
    call = doubtful.call
    tags = [
        Tag(doubtful.send_id, doubtful.part, index, doubtful.attempt)
        for index in range(len(call.recipients))
    ]
    _, tagged = tag_call(call, tags)
    if call.is_batch:
        base = call.json.get("base") or {}
        subjects = [r.get("subject", base.get("subject")) for r in call.json["requests"]]
    else:
        subjects = [call.json.get("subject")]
    return [
        Pending(tag, was_tagged, recipients, subject if isinstance(subject, str) else None)
        for tag, was_tagged, recipients, subject in zip(
            tags, tagged, call.recipients, subjects, strict=True
        )
    ]


def remaining_call(call: ApiCall, indexes: Sequence[int]) -> ApiCall:
    """``call`` with only the requests at ``indexes`` (all of a single send: itself)."""
    if not call.is_batch or list(indexes) == list(range(len(call.recipients))):
        return call
    requests = call.json["requests"]
    body: dict[str, Any] = {**call.json, "requests": [requests[i] for i in indexes]}
    return ApiCall(call.path, body, tuple(call.recipients[i] for i in indexes))


class Reconciler:
    """Email Logs look-ups for one worker process, one logs client per token."""

    def __init__(self, *, settings: Settings, status: StatusStore, limiters: LimitersFor) -> None:
        self.settings = settings
        self.status = status
        self._limiters = limiters
        self._logs: dict[str, EmailLogsClient] = {}
        self._lock = threading.Lock()

    def enabled_for(self, route: Route) -> bool:
        """Whether unknown outcomes on ``route`` are looked up (never for a sandbox)."""
        return self.settings.reconcile_enabled and not route.sandbox_id

    def look_up(
        self, route: Route, parts: Sequence[Doubtful], *, deadline: float | None = None
    ) -> list[PartLookup]:
        """One ``PartLookup`` per part, from one search of all their recipients.

        Raises ``EmailLogsUnavailable`` (fall back) or ``EmailLogsBusy`` (look later).
        """
        if not parts:
            return []
        pending = [pending_requests(part) for part in parts]
        recipients = {r for requests in pending for p in requests for r in p.recipients}
        since, until = window(min(part.since for part in parts), time.time())
        logged = self._logs_for(route).search(sorted(recipients), since, until, deadline=deadline)
        if any(not p.tagged for requests in pending for p in requests):
            logged = self._without_known(logged)
        flat = [p for requests in pending for p in requests]
        verdicts = iter(match_requests(flat, logged))
        return [
            PartLookup(part, [next(verdicts) for _ in requests])
            for part, requests in zip(parts, pending, strict=True)
        ]

    def close(self) -> None:
        with self._lock:
            clients, self._logs = list(self._logs.values()), {}
        for logs in clients:
            logs.close()

    def _logs_for(self, route: Route) -> EmailLogsClient:
        with self._lock:
            logs = self._logs.get(route.limiter_key)
            if logs is None:
                logs = EmailLogsClient(self.settings, route.token, self._limiters(route))
                self._logs[route.limiter_key] = logs
            return logs

    def _without_known(self, logged: list[Logged]) -> list[Logged]:
        """Drop untagged messages mailqueue already recorded for a send: they are not ours."""
        untagged = [item for item in logged if item.tag is None and keys.safe_id(item.message_id)]
        if not untagged:
            return logged
        answers = self.status.message_index.known([item.message_id for item in untagged])
        known = {item.message_id for item, seen in zip(untagged, answers, strict=True) if seen}
        return [item for item in logged if item.message_id not in known]
