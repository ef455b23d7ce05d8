"""The Email Logs API of the local Mailtrap: every accepted message, listed as Mailtrap lists it.

Mailtrap's account API (``https://mailtrap.io/api/``) answers
``GET email_logs`` (filters ``sent_after``, ``sent_before``; ``to``,
``from`` and ``subject`` with ``ci_equal`` / ``ci_not_equal`` /
``ci_contain`` / ``ci_not_contain``, ``subject`` also ``empty`` /
``not_empty``; ``category``, ``status``, ``domain_id`` and
``sending_stream`` with ``equal`` / ``not_equal``; other filters are
ignored, as Mailtrap ignores unknown ones; newest first; cursor paging with
``search_after`` and ``next_page_cursor``) and ``GET email_logs/<message id>``.
Each accepted message is one log entry per recipient, carrying its
``custom_variables`` and ``sending_stream``; the sandbox keeps no logs.

A real account lists a message only some time after accepting it, so an
entry becomes visible ``delay`` seconds after it was accepted (2 s unless
told otherwise). Mailtrap's own per-account limits (60 list and 1,000
get-by-id requests a minute) can be switched on with ``list_limit`` and
``get_limit``; ``failure`` answers every request with one status (503: the
API is down, 401: the token is refused) to exercise a client's fallbacks.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["DEFAULT_DELAY", "EmailLogs", "LogEntry"]

DEFAULT_DELAY = 2.0
PAGE_SIZE = 50

_FILTER_KEY = re.compile(r"^filters\[(\w+)\](?:\[(\w+)\])?(\[\])?$")
# Filters compared case-insensitively (ci_* operators), and exactly (equal / not_equal).
_TEXT_FILTERS = ("to", "from", "subject")
_EXACT_FILTERS = ("category", "status", "domain_id", "sending_stream")
# Every local entry's status and domain (one verified domain, all delivered).
STATUS = "delivered"
DOMAIN_ID = 1

# Status and JSON body of an answer.
Answer = tuple[int, object]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One message as the Email Logs API shows it (one recipient each)."""

    message_id: str
    to: str
    sender: str
    subject: str | None
    category: str | None
    custom_variables: Mapping[str, Any]
    sending_stream: str
    sent_at: datetime  # whole seconds, as Mailtrap's examples show them
    visible_at: float  # on the monotonic clock
    order: int  # acceptance order, breaking ties of sent_at

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "status": STATUS,
            "subject": self.subject,
            "from": self.sender,
            "to": self.to,
            "sent_at": self.sent_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "client_ip": None,
            "category": self.category,
            "custom_variables": dict(self.custom_variables),
            "sending_stream": self.sending_stream,
            "domain_id": DOMAIN_ID,
            "template_id": None,
            "template_variables": {},
            "opens_count": 0,
            "clicks_count": 0,
        }


class EmailLogs:
    """The logs of one local Mailtrap; thread-safe."""

    def __init__(
        self,
        *,
        delay: float = DEFAULT_DELAY,
        list_limit: tuple[int, float] | None = None,
        get_limit: tuple[int, float] | None = None,
        page_size: int = PAGE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.delay = delay
        self.list_limit = list_limit
        self.get_limit = get_limit
        self.page_size = page_size
        self.failure: int | None = None
        self.requests: dict[str, int] = {"list": 0, "get": 0}
        self._clock = clock
        self._entries: list[LogEntry] = []
        self._by_id: dict[str, LogEntry] = {}
        self._arrivals: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    # -- recording ------------------------------------------------------

    def record(
        self,
        message_ids: Iterable[str],
        recipients: Iterable[str],
        payload: Mapping[str, Any],
        stream: str,
    ) -> None:
        """Log one accepted message: an entry per recipient, visible after ``delay``."""
        self.record_all([(message_ids, recipients, payload)], stream)

    def record_all(
        self,
        messages: Sequence[tuple[Iterable[str], Iterable[str], Mapping[str, Any]]],
        stream: str,
    ) -> None:
        """Log messages accepted together (ids, recipients, payload each), as ``record`` does."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        visible_at = self._clock() + self.delay
        with self._lock:
            for message_ids, recipients, payload in messages:
                sender = payload.get("from") or {}
                address = str(sender.get("email", "")) if isinstance(sender, dict) else ""
                variables = payload.get("custom_variables") or {}
                # Entries are frozen: the recipients of one message share a copy.
                copied = dict(variables) if isinstance(variables, dict) else {}
                subject, category = payload.get("subject"), payload.get("category")
                for message_id, recipient in zip(message_ids, recipients, strict=False):
                    entry = LogEntry(
                        message_id=message_id,
                        to=recipient,
                        sender=address,
                        subject=subject,
                        category=category,
                        custom_variables=copied,
                        sending_stream=stream,
                        sent_at=now,
                        visible_at=visible_at,
                        order=len(self._entries),
                    )
                    self._entries.append(entry)
                    self._by_id[message_id] = entry

    def clear(self) -> None:
        """Forget every entry, counter and rate-limit window."""
        with self._lock:
            self._entries.clear()
            self._by_id.clear()
            self._arrivals.clear()
            self.requests = {"list": 0, "get": 0}

    @property
    def entries(self) -> list[LogEntry]:
        """Every entry, visible or not, in acceptance order."""
        with self._lock:
            return list(self._entries)

    # -- answering ------------------------------------------------------

    def answer(self, method: str, target: str, token: str) -> Answer:
        """Answer a request for ``target`` (the path below the API base, with its query)."""
        parts = urlsplit(target)
        path = parts.path.strip("/")
        if method != "GET":
            return 405, {"error": "Method Not Allowed"}
        if path == "email_logs":
            kind = "list"
        elif path.startswith("email_logs/") and path.count("/") == 1:
            kind = "get"
        else:
            return 404, {"error": "Not Found"}
        with self._lock:
            self.requests[kind] += 1
        if self.failure is not None:
            return self.failure, {"error": "Service Unavailable"}
        if self._limited(kind, token):
            return 429, {"errors": "Rate limit exceeded"}
        if kind == "get":
            return self._get(unquote(path.partition("/")[2]))
        return self._list(parse_qsl(parts.query, keep_blank_values=True))

    def _limited(self, kind: str, token: str) -> bool:
        limit = self.list_limit if kind == "list" else self.get_limit
        if limit is None:
            return False
        amount, period = limit
        now = self._clock()
        with self._lock:
            arrivals = self._arrivals.setdefault((kind, token), deque())
            while arrivals and arrivals[0] <= now - period:
                arrivals.popleft()
            if len(arrivals) >= amount:
                return True
            arrivals.append(now)
            return False

    def _get(self, message_id: str) -> Answer:
        with self._lock:
            entry = self._by_id.get(message_id)
        if entry is None or entry.visible_at > self._clock():
            return 404, {"error": "Not Found"}
        return 200, {**entry.as_json(), "events": []}

    def _list(self, query: list[tuple[str, str]]) -> Answer:
        try:
            filters, cursor = _parse_query(query)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        now = self._clock()
        with self._lock:
            visible = [e for e in self._entries if e.visible_at <= now]
        matching = [e for e in visible if all(test(e) for test in filters)]
        matching.sort(key=lambda e: (e.sent_at, e.order), reverse=True)
        start = 0
        if cursor is not None:
            ids = [e.message_id for e in matching]
            if cursor not in ids:
                return 400, {"error": "search_after does not name a listed message"}
            start = ids.index(cursor) + 1
        page = matching[start : start + self.page_size]
        more = start + len(page) < len(matching)
        return 200, {
            "messages": [e.as_json() for e in page],
            "total_count": len(matching),
            "next_page_cursor": page[-1].message_id if more and page else None,
        }


Filter = Callable[[LogEntry], bool]


def _parse_query(query: list[tuple[str, str]]) -> tuple[list[Filter], str | None]:
    """The filters and cursor of a list request; unknown filters are ignored, as by Mailtrap."""
    specs: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for key, value in query:
        if key == "search_after":
            cursor = value or None
            continue
        match = _FILTER_KEY.match(key)
        if match is None:
            continue
        name, member, many = match.groups()
        spec = specs.setdefault(name, {})
        if member is None:
            spec["value"] = value
        elif member == "value" and many:
            spec.setdefault("values", []).append(value)
        else:
            spec[member] = value
    filters: list[Filter] = []
    after = _time_bound(specs.get("sent_after"), "sent_after")
    before = _time_bound(specs.get("sent_before"), "sent_before")
    if after is not None and before is not None and after > before:
        raise ValueError("sent_after must be before or equal to sent_before")
    if after is not None:
        filters.append(lambda e: e.sent_at >= after)
    if before is not None:
        filters.append(lambda e: e.sent_at <= before)
    for name in _TEXT_FILTERS:
        if name in specs:
            filters.append(_text_filter(name, specs[name]))
    for name in _EXACT_FILTERS:
        if name in specs:
            filters.append(_exact_filter(name, specs[name]))
    return filters, cursor


def _time_bound(spec: Mapping[str, Any] | None, name: str) -> datetime | None:
    if spec is None or not spec.get("value"):
        return None
    text = str(spec["value"]).replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def _values(spec: Mapping[str, Any]) -> list[str]:
    if "values" in spec:
        return [str(v) for v in spec["values"]]
    return [str(spec.get("value", ""))]


def _field(entry: LogEntry, name: str) -> str | None:
    return {
        "to": entry.to,
        "from": entry.sender,
        "subject": entry.subject,
        "category": entry.category,
        "status": STATUS,
        "domain_id": str(DOMAIN_ID),
        "sending_stream": entry.sending_stream,
    }[name]


def _text_filter(name: str, spec: Mapping[str, Any]) -> Filter:
    operator = spec.get("operator", "ci_equal")
    wanted = [v.casefold() for v in _values(spec)]

    def text(entry: LogEntry) -> str:
        return (_field(entry, name) or "").casefold()

    if operator in ("ci_equal", "ci_not_equal"):
        negate = operator == "ci_not_equal"
        return lambda e: (text(e) in wanted) != negate
    if operator in ("ci_contain", "ci_not_contain"):
        negate = operator == "ci_not_contain"
        return lambda e: any(w in text(e) for w in wanted) != negate
    if name == "subject" and operator in ("empty", "not_empty"):
        negate = operator == "not_empty"
        return lambda e: (not _field(e, name)) != negate
    return lambda e: True  # an unknown operator is ignored like an unknown filter


def _exact_filter(name: str, spec: Mapping[str, Any]) -> Filter:
    operator = spec.get("operator", "equal")
    if operator not in ("equal", "not_equal"):
        return lambda e: True
    wanted = _values(spec)
    negate = operator == "not_equal"
    return lambda e: (_field(e, name) in wanted) != negate
