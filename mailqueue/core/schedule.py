"""Points in time a message may carry: ``send_at`` and ``expires_at`` (pure, no I/O).

Anymail lets ``send_at`` be a datetime, an ISO 8601 string or a Unix timestamp;
``expires_at`` takes the same forms. Both become Unix seconds. A naive
datetime or ISO string is read as UTC, as a queue shared by machines in
several time zones cannot guess a local one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from mailqueue.errors import ValidationError

__all__ = ["SCHEDULE_KEYS", "Schedule", "parse_when", "schedule_of"]

SCHEDULE_KEYS = ("send_at", "expires_at")

# Far enough for any campaign, near enough that a typo (milliseconds given as
# seconds) is refused instead of holding a message for ten thousand years.
_LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc).timestamp()


def parse_when(value: object, field: str) -> float:
    """Unix seconds of ``value`` (datetime, date, ISO 8601 string or number).

    Raises ValidationError naming ``field`` for anything else.
    """
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be a time, not a boolean", field=field)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, datetime):
        seconds = _aware(value).timestamp()
    elif isinstance(value, date):
        seconds = datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    elif isinstance(value, str):
        seconds = _parse_text(value.strip(), field)
    else:
        raise ValidationError(
            f"{field} must be a datetime, an ISO 8601 string or a Unix timestamp, "
            f"not {type(value).__name__}",
            field=field,
        )
    if not math.isfinite(seconds) or seconds < 0 or seconds > _LATEST:
        raise ValidationError(f"{field} is out of range: {value!r}", field=field)
    return seconds


def _parse_text(text: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    # fromisoformat before Python 3.11 does not read a trailing "Z".
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        return _aware(datetime.fromisoformat(iso)).timestamp()
    except ValueError:
        raise ValidationError(
            f"{field} is not an ISO 8601 time or a Unix timestamp: {text!r}", field=field
        ) from None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


class Schedule:
    """When a message may first be sent, and when it stops being worth sending."""

    __slots__ = ("expires_at", "send_at")

    def __init__(self, send_at: float | None = None, expires_at: float | None = None) -> None:
        self.send_at = send_at
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"Schedule(send_at={self.send_at!r}, expires_at={self.expires_at!r})"


def schedule_of(message: Mapping[str, Any]) -> Schedule:
    """The message's ``send_at`` and ``expires_at`` as Unix seconds (None when absent)."""
    send_at = message.get("send_at")
    expires_at = message.get("expires_at")
    return Schedule(
        None if send_at is None else parse_when(send_at, "send_at"),
        None if expires_at is None else parse_when(expires_at, "expires_at"),
    )
