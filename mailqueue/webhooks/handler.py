"""The tracking webhook's logic, independent of any web framework.

``TrackingHandler.handle(method, headers, body)`` answers one request; the WSGI
app (``app.py``) and the Django view are thin adapters around it.

Mailtrap retries anything but 200 (40 times, every 5 minutes) and then pauses
the webhook, so answers are chosen with care: bad input is a 400 (retrying
cannot fix it), a store outage is a 503 (retrying will), and nothing a client
sends can produce a 500.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import NamedTuple

import redis

from mailqueue.core.events import TrackingEvent
from mailqueue.errors import MailqueueError, ValidationError
from mailqueue.metrics import instruments as metrics
from mailqueue.serving.failed_logins import FailedLogins
from mailqueue.settings import Settings
from mailqueue.store import connection
from mailqueue.store.events import EventStore
from mailqueue.store.status import now_iso
from mailqueue.store.stores import Stores
from mailqueue.webhooks.body import parse_body
from mailqueue.webhooks.verify import REALM, RequestVerifier

__all__ = ["ALLOWED_METHODS", "Response", "TrackingHandler"]

logger = logging.getLogger(__name__)

ALLOWED_METHODS = "POST, HEAD, OPTIONS"
_TEXT = ("Content-Type", "text/plain; charset=utf-8")


class Response(NamedTuple):
    """An HTTP answer: status code, headers, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        """``"200 OK"``, as WSGI wants it."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def text_response(status: int, text: str, *extra: tuple[str, str]) -> Response:
    """A plain-text answer."""
    return Response(status, [_TEXT, *extra], (text + "\n").encode("utf-8") if text else b"")


class TrackingHandler:
    """Verifies, parses and records one webhook request."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        observers: Sequence[Callable[[Sequence[TrackingEvent]], None]] = (),
        failed_logins: FailedLogins | None = None,
    ) -> None:
        # Fails here, at start-up, when no credential is configured.
        self.verifier = RequestVerifier.from_settings(settings)
        self.store = store
        self.max_body = settings.webhook_max_body
        # Told of every event of a request once it is recorded (Anymail's tracking signal).
        self.observers = tuple(observers)
        # Shared by handlers built per request (Django), so that failures add up.
        self.failed_logins = failed_logins or FailedLogins("webhook")

    @classmethod
    def from_settings(
        cls, settings: Settings, redis_client: redis.Redis | None = None
    ) -> TrackingHandler:
        """A handler writing to ``redis_client``, else to a client for ``settings``."""
        client = redis_client if redis_client is not None else connect(settings)
        return cls(settings, Stores.over(client, settings).events)

    def too_large(self, content_length: int) -> bool:
        """Whether a declared body length is past the bound (checked before reading)."""
        return content_length > self.max_body

    def screen(self, method: str, headers: Mapping[str, str], client: str = "") -> Response | None:
        """The answer to a POST whose body has not been read yet, when its headers decide it.

        A throttled client gets its 429 and failed basic auth its 401 before
        a byte of the body is read. The signature covers the body, so it
        can only be checked once the body is in (``handle``).
        """
        if method.upper() != "POST":
            return None
        throttled = self._throttled(client)
        if throttled is not None:
            return throttled
        if self.verifier.uses_basic_auth and not self.verifier.verify_basic(
            headers.get("authorization")
        ):
            return self._refused(client)
        return None

    def handle(
        self, method: str, headers: Mapping[str, str], body: bytes, client: str = ""
    ) -> Response:
        """Answer one request to the tracking URL.

        ``headers`` maps lowercase header names to values; only
        ``authorization`` and ``mailtrap-signature`` are read. ``client``
        (the peer's address) is what failed logins are throttled by.
        """
        method = method.upper()
        if method in ("HEAD", "OPTIONS"):
            # Like Anymail: lets a URL check succeed without credentials.
            return Response(200, [("Allow", ALLOWED_METHODS), _TEXT], b"")
        if method != "POST":
            return text_response(405, "method not allowed", ("Allow", ALLOWED_METHODS))
        if len(body) > self.max_body:
            return text_response(413, f"body is larger than {self.max_body} bytes")
        throttled = self._throttled(client)
        if throttled is not None:
            return throttled
        if not self.verifier.verify(
            headers.get("authorization"), headers.get("mailtrap-signature"), body
        ):
            return self._refused(client)
        try:
            events = parse_body(body)
        except ValidationError as exc:
            logger.info("tracking webhook: rejected body: %s", exc)
            metrics.count_webhook_event("all", "rejected")
            return text_response(400, str(exc))
        except Exception as exc:
            # Whatever the body did to the parser, it is the body's fault; one
            # line, since a traceback through a deeply nested body is huge.
            logger.warning("tracking webhook: unparsable body (%s)", type(exc).__name__)
            metrics.count_webhook_event("all", "rejected")
            return text_response(400, "body could not be parsed")
        try:
            result = self.store.apply(events, now_iso())
        except (redis.RedisError, MailqueueError):
            logger.warning("tracking webhook: status store unavailable", exc_info=True)
            return text_response(503, "status store unavailable, retry later")
        except Exception:
            logger.exception("tracking webhook: recording %d events failed", len(events))
            return text_response(503, "events could not be recorded, retry later")
        logger.info(
            "tracking webhook: %d events, %d recorded, %d duplicate, %d unknown message id",
            len(events),
            result.recorded,
            result.duplicates,
            result.unknown_message_ids,
        )
        for event in events:
            metrics.count_webhook_event(event.event_type, "received")
        metrics.count_webhook_event("all", "recorded", result.recorded)
        metrics.count_webhook_event("all", "duplicate", result.duplicates)
        metrics.count_webhook_event("all", "unknown_message", result.unknown_message_ids)
        for observe in self.observers:
            try:
                observe(events)
            except Exception:
                # The events are recorded: a failing receiver must not make
                # Mailtrap post them again (and record nothing new).
                logger.exception("tracking webhook: an event receiver failed")
        return Response(200, [_TEXT], b"")

    def _throttled(self, client: str) -> Response | None:
        wait = self.failed_logins.retry_after(client)
        if wait is None:
            return None
        metrics.count_webhook_event("all", "rejected")
        return text_response(
            429, "too many failed attempts, retry later", ("Retry-After", str(math.ceil(wait)))
        )

    def _refused(self, client: str) -> Response:
        self.failed_logins.failed(client)
        metrics.count_webhook_event("all", "rejected")
        challenge = (
            [("WWW-Authenticate", f'Basic realm="{REALM}"')]
            if self.verifier.uses_basic_auth
            else []
        )
        return text_response(401, "authentication failed", *challenge)


def connect(settings: Settings) -> redis.Redis:
    """A Redis client for the status store, with bounded timeouts."""
    return connection.connect(settings.status_redis_url)
