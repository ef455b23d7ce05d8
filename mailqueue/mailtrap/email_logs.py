"""The one place that reads Mailtrap's Email Logs over HTTP, with its errors classified.

``EmailLogsClient.search`` lists the messages sent to some recipients in a
time window (``GET email_logs`` with ``filters[to]`` and the ``sent_after``
/ ``sent_before`` window, following ``next_page_cursor``); ``get`` reads one
message by id. Before every request it takes a slot from the logs API's own
fleet-wide limiter (Mailtrap: 60 list and 1,000 get-by-id requests a minute
per account) and one from the token's sending limiter, since Mailtrap counts
every request against the token's 150 per 10 s too.

Errors: a 429 is waited out (the whole fleet cools down), never read as
"not found"; when the wait outlasts the caller's deadline, ``EmailLogsBusy``.
No answer or a 5xx, after a few tries, and a refused token (401/403) or an
answer we cannot read raise ``EmailLogsUnavailable``: the caller cannot
decide, and falls back to sending again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import redis
import requests

from mailqueue.core.logmatch import Logged, parse_logged
from mailqueue.core.responses import parse_retry_after
from mailqueue.core.routing import Route
from mailqueue.errors import EmailLogsBusy, EmailLogsUnavailable, RateLimited
from mailqueue.mailtrap.session import ApiSession
from mailqueue.mailtrap.transport import Limiter, backoff_seconds
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.keys import Keys
from mailqueue.store.ratelimit import FleetRateLimiter

__all__ = [
    "GET_LIMIT",
    "LIST_LIMIT",
    "EmailLogsClient",
    "LogsLimiters",
    "fleet_limiters",
    "window",
]

log = logging.getLogger(__name__)

# Mailtrap's rate-limits page: per account, besides the token's general limit.
LIST_LIMIT = RateLimit(60, 60.0)
GET_LIMIT = RateLimit(1000, 60.0)
# Tries of one request when no answer comes (or a 5xx).
ATTEMPTS = 3
# Characters of recipient filters per list request: long query strings are
# refused by some proxies, so many recipients take several requests.
MAX_FILTER_CHARS = 3000
# A listing that never ends is an answer we cannot read.
MAX_PAGES = 200


class LogsLimiters:
    """The limiters a look-up takes a slot from: the logs API's, and the token's sending one."""

    def __init__(self, list_: Limiter | None, get: Limiter | None, sending: Limiter | None) -> None:
        self.list = list_
        self.get = get
        self.sending = sending


def fleet_limiters(
    redis_client: redis.Redis,
    route: Route,
    list_limit: RateLimit = LIST_LIMIT,
    *,
    key_space: Keys,
) -> LogsLimiters:
    """Fleet-wide limiters in Redis for look-ups with ``route``'s token.

    Mailtrap counts the logs limits per account; mailqueue knows tokens, so a
    token (one account or one of its tokens) is the unit here. ``key_space``
    is the client's, so that every process of the fleet counts in the same
    windows as its workers, whatever its key prefix.
    """

    def logs_route(kind: str, limit: RateLimit) -> Route:
        return Route(
            stream="transactional",
            account=route.account,
            base_url=route.base_url,
            token=route.token,
            sandbox_id=None,
            rate_limit=limit,
            limiter_key=f"logs-{kind}-{route.limiter_key}",
        )

    return LogsLimiters(
        FleetRateLimiter(redis_client, logs_route("list", list_limit), key_space=key_space),
        FleetRateLimiter(redis_client, logs_route("get", GET_LIMIT), key_space=key_space),
        FleetRateLimiter(redis_client, route, key_space=key_space),
    )


class EmailLogsClient(ApiSession):
    """Reads Email Logs with one token over a pooled ``requests.Session``."""

    def __init__(
        self,
        settings: Settings,
        token: str,
        limiters: LogsLimiters | None = None,
        *,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.base_url = settings.general_base_url
        self.limiters = limiters or LogsLimiters(None, None, None)
        self.attempts = attempts
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        super().__init__({"Api-Token": token}, pool_size=4)

    # -- look-ups ---------------------------------------------------------

    def search(
        self,
        recipients: Sequence[str],
        since: datetime,
        until: datetime,
        *,
        deadline: float | None = None,
    ) -> list[Logged]:
        """Every message sent to one of ``recipients`` between ``since`` and ``until``.

        ``deadline`` (a ``time.monotonic()`` value) bounds the waits for rate limits.
        """
        found: dict[str, Logged] = {}
        window = [
            ("filters[sent_after]", _iso(since)),
            ("filters[sent_before]", _iso(until)),
            ("filters[to][operator]", "ci_equal"),
        ]
        for chunk in _chunks(sorted(set(recipients))):
            params = [*window, *(("filters[to][value][]", r) for r in chunk)]
            for item in self._pages(params, deadline):
                found.setdefault(item.message_id, item)
        return list(found.values())

    def get(self, message_id: str, *, deadline: float | None = None) -> Logged | None:
        """One message by its Mailtrap id, or None when the logs do not list it (yet)."""
        data = self._request(
            "email_logs/" + quote(message_id, safe=""), [], self.limiters.get, deadline, True
        )
        if data is None:
            return None
        item = parse_logged(data)
        if item is None:
            raise EmailLogsUnavailable(
                "Email Logs answered a malformed message", reason="malformed"
            )
        return item

    def _pages(self, params: list[tuple[str, str]], deadline: float | None) -> Iterator[Logged]:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query = params if cursor is None else [*params, ("search_after", cursor)]
            data = self._request("email_logs", query, self.limiters.list, deadline, False)
            messages = data.get("messages") if isinstance(data, dict) else None
            if not isinstance(messages, list):
                raise EmailLogsUnavailable(
                    "Email Logs answered without a messages list", reason="malformed"
                )
            for raw in messages:
                item = parse_logged(raw) if isinstance(raw, dict) else None
                if item is None:
                    raise EmailLogsUnavailable(
                        "Email Logs listed a malformed message", reason="malformed"
                    )
                yield item
            cursor = data.get("next_page_cursor")
            if not cursor:
                return
        raise EmailLogsUnavailable("Email Logs paging did not end", reason="malformed")

    # -- one request --------------------------------------------------------

    def _request(
        self,
        path: str,
        params: list[tuple[str, str]],
        limiter: Limiter | None,
        deadline: float | None,
        missing_ok: bool,
    ) -> Any:
        failures = 0
        while True:
            self._acquire(limiter, deadline)
            try:
                response = self._session.get(
                    self.base_url + path, params=params, timeout=self._timeout
                )
                content = response.content
            except requests.RequestException as exc:
                failures += 1
                if failures >= self.attempts:
                    # Not chained: a requests error may quote a header or a URL.
                    raise EmailLogsUnavailable(
                        f"Email Logs unreachable ({type(exc).__name__})", reason="unreachable"
                    ) from None
                self._pause(backoff_seconds(failures), deadline)
                continue
            status = response.status_code
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                # Every worker waits: the limit is the account's, not this process's.
                if limiter is not None:
                    limiter.penalize(retry_after)
                else:
                    self._cool_down(retry_after, deadline)
                continue
            if status == 404 and missing_ok:
                return None
            if status in (401, 403):
                raise EmailLogsUnavailable(
                    f"Email Logs refused the API token ({status})",
                    reason="refused",
                    status_code=status,
                )
            if status >= 500 or status == 408:
                failures += 1
                if failures >= self.attempts:
                    raise EmailLogsUnavailable(
                        f"Email Logs answered {status}", reason="unreachable", status_code=status
                    )
                self._pause(backoff_seconds(failures), deadline)
                continue
            if status != 200:
                raise EmailLogsUnavailable(
                    f"Email Logs answered {status}", reason="rejected", status_code=status
                )
            try:
                return json.loads(content)
            except ValueError:
                raise EmailLogsUnavailable(
                    "Email Logs answered with a body that is not JSON", reason="malformed"
                ) from None

    def _acquire(self, limiter: Limiter | None, deadline: float | None) -> None:
        for each in (limiter, self.limiters.sending):
            if each is None:
                continue
            max_wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                each.acquire(max_wait)
            except RateLimited as exc:
                raise EmailLogsBusy(
                    "Email Logs rate limit outlasts the time left for this look-up",
                    retry_after=exc.retry_after,
                ) from exc

    @staticmethod
    def _cool_down(retry_after: float | None, deadline: float | None) -> None:
        """Wait out a 429 with no fleet limiter to cool down: its ``Retry-After``, else a minute.

        Both of the logs API's limits count per minute, and Mailtrap documents no
        ``Retry-After``.
        """
        seconds = LIST_LIMIT.period if retry_after is None else retry_after
        if deadline is not None and time.monotonic() + seconds > deadline:
            raise EmailLogsBusy(
                "Email Logs rate limit outlasts the time left for this look-up",
                retry_after=seconds,
            )
        time.sleep(seconds)

    @staticmethod
    def _pause(seconds: float, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() + seconds > deadline:
            raise EmailLogsUnavailable(
                "Email Logs unreachable before the deadline", reason="unreachable"
            )
        time.sleep(seconds)


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    # Whole seconds, rounded outwards by the caller's margin: Mailtrap's own
    # times are whole seconds.
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(started: float, now: float, margin: float = 5.0) -> tuple[datetime, datetime]:
    """The look-up window for a call started at ``started`` (unix seconds), looked up at ``now``.

    Widened by ``margin`` on both sides for clock differences between this
    host and Mailtrap, and for Mailtrap's whole-second times. A start later
    than ``now`` (stamped by a host whose clock runs ahead) counts as ``now``:
    Mailtrap refuses a window that ends before it begins.
    """
    since = datetime.fromtimestamp(min(started, now) - margin, timezone.utc)
    until = datetime.fromtimestamp(now + margin, timezone.utc) + timedelta(seconds=1)
    return since, until


def _chunks(recipients: Sequence[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    used = 0
    for recipient in recipients:
        size = len(quote(recipient, safe="")) + len("&filters%5Bto%5D%5Bvalue%5D%5B%5D=")
        if chunk and used + size > MAX_FILTER_CHARS:
            yield chunk
            chunk, used = [], 0
        chunk.append(recipient)
        used += size
    if chunk:
        yield chunk
