"""The one place that does HTTP: a pooled session, timeouts, and short in-process retries.

``Transport.post`` makes exactly one POST and hands the answer to
``mailqueue.core.responses``; ``Transport.send`` wraps it in a few quick tenacity
retries of transient errors, bounded by a deadline, asking the fleet-wide
limiter before every attempt. Longer waits are the Celery task's job.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception

from mailqueue.core.backoff import compute_backoff
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult, classify_exception, parse_response
from mailqueue.core.routing import Route, resolve_route
from mailqueue.errors import DeliveryError, RateLimited, TransientDeliveryError
from mailqueue.mailtrap.session import ApiSession
from mailqueue.metrics import instruments as metrics
from mailqueue.settings import Settings

__all__ = ["Limiter", "Observer", "Sender", "Transport", "Withdrawn", "backoff_seconds"]

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
# Enough keep-alive connections for a worker process's threads; more are
# opened when needed but not kept.
POOL_SIZE = 16


class Limiter(Protocol):
    """The fleet-wide rate limiter, as the transport uses it (``mailqueue.store.ratelimit``)."""

    def acquire(self, max_wait: float | None = None) -> float: ...

    def penalize(self, retry_after: float | None) -> None: ...


class Sender(Protocol):
    """What a drain needs of a transport: ``Transport``, or an in-memory one in tests."""

    def send(
        self,
        call: ApiCall,
        *,
        deadline: float | None = None,
        on_error: Callable[[DeliveryError], None] | None = None,
        proceed: Callable[[], bool] | None = None,
        give_up: Callable[[DeliveryError], bool] | None = None,
    ) -> list[RequestResult]: ...

    def close(self) -> None: ...


class Withdrawn(Exception):  # not an error: the caller chose not to send
    """The call was not made: ``proceed`` said no once the limiter let it go."""


# Called after every attempt with the API path, the HTTP status (None when no
# answer arrived) and the seconds the attempt took; a place for metrics.
Observer = Callable[[str, int | None, float], None]


def backoff_seconds(
    attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential with full jitter between ``BACKOFF_MIN`` and ``BACKOFF_MAX``; never
    less than Mailtrap's ``retry_after`` when a 429 gave one.
    """
    return compute_backoff(
        attempt,
        base=BACKOFF_MIN,
        cap=BACKOFF_MAX,
        floor=BACKOFF_MIN,
        retry_after=retry_after,
        rng=rng,
    )


class Transport(ApiSession):
    """Posts API calls to Mailtrap over one pooled, keep-alive ``requests.Session``."""

    def __init__(
        self,
        settings: Settings,
        limiter: Limiter | None = None,
        *,
        route: Route | None = None,
        observer: Observer | None = None,
        pool_size: int = POOL_SIZE,
        attempts: int = ATTEMPTS,
    ) -> None:
        # Where the calls go: the route's URL and token (the transactional
        # stream of the top-level settings unless another route is given).
        self.route = route or resolve_route(settings)
        self.settings = settings
        self.limiter = limiter
        self.observer = observer
        self.attempts = attempts
        self._base_url = self.route.base_url
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        self._sandbox = bool(self.route.sandbox_id)
        super().__init__(
            {"Api-Token": self.route.token, "Content-Type": "application/json"},
            pool_size=pool_size,
        )

    def post(self, call: ApiCall) -> list[RequestResult]:
        """Exactly one POST of ``call``; one result per request, or a ``DeliveryError``."""
        # Default json.dumps (ASCII escapes, as Anymail sends).
        body = json.dumps(call.json).encode("ascii")
        started = time.monotonic()
        try:
            response = self._session.post(
                self._base_url + call.path, data=body, timeout=self._timeout
            )
            content = response.content
        except requests.RequestException as exc:
            self._observe(call.path, None, started)
            # Not chained: the original's text may quote the token or a URL,
            # and a logged traceback would print it.
            raise classify_exception(exc, call.path) from None
        self._observe(call.path, response.status_code, started)
        return parse_response(
            call,
            response.status_code,
            content,
            sandbox=self._sandbox,
            retry_after=response.headers.get("Retry-After"),
        )

    def send(
        self,
        call: ApiCall,
        *,
        deadline: float | None = None,
        on_error: Callable[[DeliveryError], None] | None = None,
        proceed: Callable[[], bool] | None = None,
        give_up: Callable[[DeliveryError], bool] | None = None,
    ) -> list[RequestResult]:
        """``post`` with up to ``attempts`` tries for transient errors, never past ``deadline``.

        ``proceed`` is asked after each wait for the limiter, just before the
        POST: when it answers False the call is not made and ``Withdrawn`` is
        raised (a campaign paused while its call waited).

        ``deadline`` is a ``time.monotonic()`` value. The last error is re-raised
        when the attempts or the time run out. ``on_error`` sees the error of
        every failed attempt, also those a later attempt recovered from: an
        attempt that may have been delivered makes a success a possible duplicate.
        An error for which ``give_up`` answers True is re-raised at once, never
        retried (a call that may have reached Mailtrap is looked up instead).
        """

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            return backoff_seconds(state.attempt_number, retry_after=retry_after)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            # The wait is computed before this check, so a sleep that would
            # overrun the deadline is never started.
            return deadline is not None and time.monotonic() + state.upcoming_sleep >= deadline

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            metrics.count_retries()
            log.info(
                "Retrying POST %s in %.2fs after attempt %d: %s",
                call.path,
                state.upcoming_sleep,
                state.attempt_number,
                error,
            )

        def retry(error: BaseException) -> bool:
            if not isinstance(error, TransientDeliveryError):
                return False
            return give_up is None or not give_up(error)

        retrying = Retrying(
            retry=retry_if_exception(retry),
            stop=stop,
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(self._attempt, call, deadline, on_error, proceed)

    def _attempt(
        self,
        call: ApiCall,
        deadline: float | None,
        on_error: Callable[[DeliveryError], None] | None = None,
        proceed: Callable[[], bool] | None = None,
    ) -> list[RequestResult]:
        if self.limiter is not None:
            max_wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            metrics.observe_rate_limit_wait(self.limiter.acquire(max_wait))
        if proceed is not None and not proceed():
            raise Withdrawn()
        try:
            return self.post(call)
        except RateLimited as exc:
            # Tell the whole fleet first, so that other workers back off too.
            if self.limiter is not None:
                self.limiter.penalize(exc.retry_after)
            if on_error is not None:
                on_error(exc)
            raise
        except DeliveryError as exc:
            if on_error is not None:
                on_error(exc)
            raise

    def _observe(self, path: str, status_code: int | None, started: float) -> None:
        if self.observer is None:
            return
        try:
            self.observer(path, status_code, time.monotonic() - started)
        except Exception:
            log.exception("Transport observer failed")
