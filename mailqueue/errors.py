"""The exception tree of mailqueue.

    MailqueueError
    ├── ConfigurationError          a setting is missing or malformed
    ├── ValidationError             a message is malformed; raised in the producer,
    │   │                           before anything is enqueued; names the field
    │   └── UnsupportedFeature      Mailtrap cannot do what the message asks
    │                               (ignored when ignore_unsupported_features is on)
    ├── BrokerUnavailable           the broker or status store cannot be reached
    │   └── ReplicationTimeout      a write reached the Redis master, but too few
    │                               replicas confirmed it in time
    ├── DeliveryError               an API call did not succeed
    │   ├── TransientDeliveryError  worth retrying: timeouts, connection errors, 429, 5xx
    │   │   └── RateLimited         a 429; carries retry_after when Mailtrap sent one
    │   └── PermanentDeliveryError  retrying cannot help: other 4xx, malformed answers
    │       └── Redirected          the API URL answered with a redirect, never followed
    │                               (it would carry the token to another address)
    ├── EmailLogsUnavailable        Mailtrap's Email Logs cannot answer a look-up
    │   │                           (unreachable, token refused, malformed answer):
    │   │                           the outcome stays unknown, the part is sent again
    │   └── EmailLogsBusy           the logs API's rate limit outlasted the wait
    │                               allowed: look again later, never send again yet
    └── SuppressionSyncError        Mailtrap's suppression list could not be read or
                                    changed (unreachable, token refused, malformed)

Whether a failed delivery is retried is decided by the type alone: every
third-party error is translated into this tree at exactly one boundary
(``mailqueue.core.responses``), so callers never inspect ``requests`` exceptions.
Messages never carry the API token or a message body.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "DeliveryError",
    "EmailLogsBusy",
    "EmailLogsUnavailable",
    "MailqueueError",
    "PermanentDeliveryError",
    "RateLimited",
    "Redirected",
    "ReplicationTimeout",
    "SuppressionSyncError",
    "TransientDeliveryError",
    "UnsupportedFeature",
    "ValidationError",
]

# How much of a response body an error keeps: enough to read Mailtrap's
# "errors" list, never enough to echo a whole message back into logs.
BODY_EXCERPT_CHARS = 500


class MailqueueError(Exception):
    """Base of every error mailqueue raises."""


class ConfigurationError(MailqueueError):
    """A setting is missing or malformed; ``setting`` names it."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class ValidationError(MailqueueError):
    """A message is malformed. ``field`` names where, e.g. ``to[2]`` or ``attachments[0].content``.

    ``index`` is set by ``enqueue_many`` to the position of the offending message.
    """

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index

    def __str__(self) -> str:
        text = super().__str__()
        if self.index is not None:
            return f"messages[{self.index}]: {text}"
        return text


class UnsupportedFeature(ValidationError):
    """The message asks for something Mailtrap does not support (AnymailUnsupportedFeature)."""


class BrokerUnavailable(MailqueueError):
    """The broker or the status store did not answer within the bounded timeout."""


class ReplicationTimeout(BrokerUnavailable):
    """The writes are on the Redis master, but too few replicas confirmed them in time.

    They are probably queued (and are delivered unless the master is lost
    before it replicates them), so a retry should reuse the same
    ``idempotency_key`` to avoid a second copy.
    """


class DeliveryError(MailqueueError):
    """An API call failed. Carries the HTTP status (if any), the API path and a body excerpt."""

    kind = "delivery"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        path: str | None = None,
        body: str | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.path = path
        self.body_excerpt = excerpt(body) if body is not None else None
        # True when the request may have reached Mailtrap and been accepted
        # although no answer says so (a read timeout, a reset after sending):
        # a retry may then deliver twice, and the status record counts it.
        self.maybe_delivered = maybe_delivered

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.path is not None:
            parts.append(f"path={self.path}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.body_excerpt:
            parts.append(f"body={self.body_excerpt!r}")
        return " ".join(parts)

    def as_record(self) -> dict[str, object]:
        """The ``error`` member of a status record."""
        return {"kind": self.kind, "status_code": self.status_code, "message": str(self)}


class TransientDeliveryError(DeliveryError):
    """Retrying later may succeed."""

    kind = "transient"


class RateLimited(TransientDeliveryError):
    """Mailtrap answered 429. ``retry_after`` is in seconds when the answer said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help."""

    kind = "permanent"


class Redirected(PermanentDeliveryError):
    """The API URL answered 3xx: the call was not repeated where it points (with the token)."""


def excerpt(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of ``text``, marked when cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + "…"


class EmailLogsUnavailable(MailqueueError):
    """Mailtrap's Email Logs could not answer a look-up.

    ``reason`` is ``"unreachable"`` (no answer, 5xx), ``"refused"`` (401/403:
    the token may not read logs), or ``"malformed"`` (an answer we cannot read).
    """

    def __init__(self, message: str, *, reason: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = status_code


class EmailLogsBusy(EmailLogsUnavailable):
    """The logs API kept answering 429 longer than the caller could wait."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, reason="rate_limited", status_code=429)
        self.retry_after = retry_after


class SuppressionSyncError(MailqueueError):
    """Mailtrap's suppression list could not be read or changed; nothing more is synced."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
