"""What LocalMailtrap refuses in a request, in Mailtrap's words: pure, no I/O.

Each message (a ``send`` body, or a ``batch`` request merged over ``base``) is
checked against Mailtrap's published request schema by
:mod:`mailqueue.core.rules`, the same rules the producer applies. One
addition is the stand-in's own: a recipient in the reserved ``.invalid``
domain is refused, so that a test can make one request of a batch fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailqueue.core.rules import (
    MAX_BATCH_BYTES,
    batch_envelope_errors,
    is_sandbox_id,
    merge_request,
    message_errors,
)

__all__ = ["BatchCheck", "check_batch", "check_batch_size", "check_inbox_id", "check_send"]


@dataclass(frozen=True)
class BatchCheck:
    """A batch request's verdict: errors in its envelope, else one verdict per request.

    ``messages[i]`` is request *i* merged over ``base``; ``errors[i]`` is empty
    when Mailtrap would accept it.
    """

    envelope: list[str]
    messages: list[dict[str, Any]]
    errors: list[list[str]]


def check_inbox_id(inbox_id: str | None) -> bool:
    """True unless a sandbox path names something other than an inbox id (an integer from 1)."""
    return inbox_id is None or is_sandbox_id(inbox_id)


def check_batch_size(size: int) -> list[str]:
    """Mailtrap's error for a ``batch`` body of ``size`` bytes: over 50 MB is refused whole."""
    if size > MAX_BATCH_BYTES:
        return [f"the payload must not exceed {MAX_BATCH_BYTES} bytes, attachments included"]
    return []


def check_send(body: Mapping[str, Any]) -> list[str]:
    """Mailtrap's errors for a ``send`` body; empty when it would be accepted."""
    return [error.message for error in message_errors(body)] + _refused_recipients(body)


def check_batch(body: Mapping[str, Any]) -> BatchCheck:
    """Mailtrap's verdict on a ``batch`` body: the envelope first, then each request."""
    envelope = [error.message for error in batch_envelope_errors(body)]
    if envelope:
        return BatchCheck(envelope, [], [])
    base: Mapping[str, Any] = body.get("base", {})
    requests: Sequence[Mapping[str, Any]] = body["requests"]
    messages = [merge_request(base, request) for request in requests]
    return BatchCheck([], messages, [check_send(message) for message in messages])


def _refused_recipients(body: Mapping[str, Any]) -> list[str]:
    errors = []
    for kind in ("to", "cc", "bcc"):
        entries = body.get(kind)
        for entry in entries if isinstance(entries, list) else ():
            email = entry.get("email") if isinstance(entry, Mapping) else None
            if isinstance(email, str) and email.rstrip(".").lower().endswith(".invalid"):
                errors.append(f"'{kind}' address {email} is refused")
    return errors
