"""Mailtrap's answers, classified: the one boundary where HTTP outcomes become mailqueue errors.

Pure: no I/O. ``parse_response`` turns a status code and body into one
``RequestResult`` per request of the call, or raises a ``DeliveryError``
subclass; ``classify_exception`` translates a ``requests`` exception. Whether a
failure is retried is decided by the type returned here and nowhere else.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from requests.exceptions import ChunkedEncodingError, ContentDecodingError
from urllib3 import exceptions as urllib3_errors

from mailqueue.core.payload import ApiCall
from mailqueue.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimited,
    Redirected,
    TransientDeliveryError,
)

__all__ = [
    "RequestResult",
    "classify_exception",
    "parse_response",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

# Status codes worth retrying besides 429 and 5xx: a request timeout says
# nothing about the message itself.
_TRANSIENT_STATUS = frozenset({408})
_AUTH_STATUS = frozenset({401, 403})


@dataclass(frozen=True)
class RequestResult:
    """The outcome of one request of a call (a single send, or one item of a batch)."""

    message_ids: dict[str, str | None]
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when Mailtrap accepted this request."""
        return self.error is None


def parse_response(
    call: ApiCall,
    status_code: int,
    body: bytes,
    *,
    sandbox: bool,
    retry_after: str | None = None,
) -> list[RequestResult]:
    """One ``RequestResult`` per request of ``call``, or a ``DeliveryError`` for the whole call.

    ``sandbox`` says the call went to a sandbox inbox, which answers one message
    id per send instead of one per recipient; ``retry_after`` is the raw header.
    """
    text = body.decode("utf-8", errors="replace")
    if not 200 <= status_code < 300:
        raise _status_error(status_code, call.path, text, retry_after)
    try:
        data = json.loads(text)
    except ValueError:
        raise _shape_error(
            "Mailtrap answered with a body that is not JSON", call.path, status_code, text
        ) from None
    if not isinstance(data, dict):
        raise _shape_error(
            "Mailtrap answered with JSON that is not an object", call.path, status_code, text
        )
    if data.get("errors") or not data.get("success"):
        raise PermanentDeliveryError(
            f"Mailtrap reported a failure with status {status_code}: "
            f"{_join_errors(data.get('errors')) or 'no errors given'}",
            status_code=status_code,
            path=call.path,
            body=text,
            maybe_delivered=_any_item_succeeded(data),
        )
    if call.is_batch:
        return _batch_results(call, data, status_code, text, sandbox)
    ids = data.get("message_ids")
    if not isinstance(ids, list):
        raise _shape_error(
            "Mailtrap's answer has no message_ids list", call.path, status_code, text
        )
    recipients = call.recipients[0] if call.recipients else ()
    return [RequestResult(_assign_ids(recipients, ids, sandbox=sandbox))]


def _batch_results(
    call: ApiCall, data: dict[str, Any], status_code: int, text: str, sandbox: bool
) -> list[RequestResult]:
    responses = data.get("responses")
    if not isinstance(responses, list):
        raise _shape_error(
            "Mailtrap's batch answer has no responses list", call.path, status_code, text
        )
    if len(responses) != len(call.recipients):
        # Without one answer per request we cannot tell which message went where.
        raise _shape_error(
            f"Mailtrap answered {len(responses)} batch responses for "
            f"{len(call.recipients)} requests",
            call.path,
            status_code,
            text,
        )
    results = []
    for index, (item, recipients) in enumerate(zip(responses, call.recipients, strict=True)):
        if not isinstance(item, dict) or "success" not in item:
            raise _shape_error(
                f"Mailtrap's batch response {index} is malformed", call.path, status_code, text
            )
        if not item["success"]:
            error = _join_errors(item.get("errors")) or "Mailtrap refused this request"
            results.append(RequestResult(dict.fromkeys(recipients), error=error))
            continue
        ids = item.get("message_ids")
        if not isinstance(ids, list):
            raise _shape_error(
                f"Mailtrap's batch response {index} has no message_ids list",
                call.path,
                status_code,
                text,
            )
        results.append(RequestResult(_assign_ids(recipients, ids, sandbox=sandbox)))
    return results


def _assign_ids(
    recipients: Sequence[str], ids: Sequence[object], *, sandbox: bool
) -> dict[str, str | None]:
    # Mailtrap has accepted the request by now, so an unexpected id count must
    # never turn into an error (a retry would send the message twice).
    ids_text = [None if value is None else str(value) for value in ids]
    expected = 1 if sandbox else len(recipients)
    if len(ids_text) != expected:
        log.warning(
            "Mailtrap answered %d message ids for %d recipients", len(ids_text), len(recipients)
        )
    if len(ids_text) == 1:
        # The sandbox answers one id per send, shared by all its recipients.
        return dict.fromkeys(recipients, ids_text[0])
    assigned: dict[str, str | None] = {}
    for position, key in enumerate(recipients):
        value = ids_text[position] if position < len(ids_text) else None
        # A repeated address keeps the last id it was given, as Anymail does.
        if value is not None or key not in assigned:
            assigned[key] = value
    return assigned


def _any_item_succeeded(data: dict[str, Any]) -> bool:
    responses = data.get("responses")
    if not isinstance(responses, list):
        return False
    return any(isinstance(item, dict) and item.get("success") for item in responses)


def _join_errors(errors: object) -> str:
    if errors is None or errors == "" or errors == []:
        return ""
    if isinstance(errors, str):
        return errors
    if isinstance(errors, list):
        return "; ".join(_join_errors(item) or "?" for item in errors)
    if isinstance(errors, dict):
        return "; ".join(f"{key}: {_join_errors(value)}" for key, value in errors.items())
    return str(errors)


def _errors_in(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    return _join_errors(data.get("errors") or data.get("error"))


def _status_error(status_code: int, path: str, text: str, retry_after: str | None) -> DeliveryError:
    detail = _errors_in(text)
    suffix = f": {detail}" if detail else ""
    if status_code == 429:
        seconds = parse_retry_after(retry_after)
        return RateLimited(
            f"Mailtrap rate limit exceeded{suffix}",
            retry_after=seconds,
            status_code=status_code,
            path=path,
            body=text,
        )
    if 300 <= status_code < 400:
        # Where it points is not said: a Location may carry anything.
        return Redirected(
            f"Mailtrap's API URL answered with a redirect ({status_code}), which is not "
            "followed: check MAILTRAP_API_URL",
            status_code=status_code,
            path=path,
        )
    if status_code in _AUTH_STATUS:
        return PermanentDeliveryError(
            f"Mailtrap rejected the API token{suffix}",
            status_code=status_code,
            path=path,
            body=text,
        )
    if status_code >= 500 or status_code in _TRANSIENT_STATUS:
        return TransientDeliveryError(
            f"Mailtrap API error {status_code}{suffix}",
            status_code=status_code,
            path=path,
            body=text,
        )
    return PermanentDeliveryError(
        f"Mailtrap API error {status_code}{suffix}", status_code=status_code, path=path, body=text
    )


def _shape_error(message: str, path: str, status_code: int, text: str) -> PermanentDeliveryError:
    # A 2xx means Mailtrap probably accepted the message: retrying an answer we
    # cannot read risks a duplicate, so it is permanent and flagged as such.
    return PermanentDeliveryError(
        message, status_code=status_code, path=path, body=text, maybe_delivered=True
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def classify_exception(exc: requests.RequestException, path: str) -> DeliveryError:
    """The ``DeliveryError`` for a network-level failure of a POST to ``path``.

    The message is in mailqueue's own words and names only the exception's
    type: the text of a ``requests`` error may quote a request header (the
    token) or a URL, and this message is stored, logged and shown.
    """
    reason = type(exc).__name__
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TransientDeliveryError(f"Timed out connecting to Mailtrap ({reason})", path=path)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return TransientDeliveryError(
            f"Timed out waiting for Mailtrap's answer ({reason})", path=path, maybe_delivered=True
        )
    if isinstance(exc, ChunkedEncodingError | ContentDecodingError):
        return TransientDeliveryError(
            f"Mailtrap's answer was cut off ({reason})", path=path, maybe_delivered=True
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _failed_before_sending(exc):
            return TransientDeliveryError(f"Could not connect to Mailtrap ({reason})", path=path)
        return TransientDeliveryError(
            f"Connection to Mailtrap lost after sending ({reason})",
            path=path,
            maybe_delivered=True,
        )
    if isinstance(
        exc,
        requests.exceptions.URLRequired
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | requests.exceptions.InvalidURL
        | requests.exceptions.InvalidHeader
        | requests.exceptions.TooManyRedirects,
    ):
        return PermanentDeliveryError(f"Cannot post to Mailtrap ({reason})", path=path)
    return TransientDeliveryError(
        f"Error posting to Mailtrap ({reason})", path=path, maybe_delivered=True
    )


def _failed_before_sending(exc: requests.exceptions.ConnectionError) -> bool:
    # requests wraps urllib3: a MaxRetryError whose reason is a connection or
    # TLS/proxy failure means no byte of the request left; a ProtocolError
    # ("Connection aborted.") means the peer dropped us after we sent it.
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return True
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3_errors.MaxRetryError):
        cause = cause.reason
    return isinstance(
        cause,
        urllib3_errors.ConnectTimeoutError
        | urllib3_errors.SSLError
        | urllib3_errors.ProxyError
        | ConnectionRefusedError,
    )
