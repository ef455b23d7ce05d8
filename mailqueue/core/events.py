"""Normalize one Mailtrap tracking event into a ``TrackingEvent`` (pure, no I/O).

Event types follow django-anymail's Mailtrap webhook, so a Django/Anymail user
sees the same names: ``delivery`` becomes ``delivered``, ``soft bounce`` becomes
``deferred`` and so on. Unknown names, including Mailtrap's ``inbound…``
events, become ``unknown``: they are kept in a send's history but never change
a recipient's status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from mailqueue.errors import ValidationError

__all__ = ["EVENT_TYPES", "TrackingEvent", "normalize_event"]

# Mailtrap event name -> (Anymail event_type, Anymail reject_reason).
# Payloads spell "soft bounce" and "spam"; the webhook-management API spells
# the same events "soft_bounce" and "spam_complaint", so both are accepted.
EVENT_TYPES: Mapping[str, tuple[str, str | None]] = {
    "delivery": ("delivered", None),
    "open": ("opened", None),
    "click": ("clicked", None),
    "bounce": ("bounced", "bounced"),
    "soft bounce": ("deferred", "other"),
    "soft_bounce": ("deferred", "other"),
    "suspension": ("deferred", "other"),
    "spam": ("complained", "spam"),
    "spam_complaint": ("complained", "spam"),
    "unsubscribe": ("unsubscribed", "unsubscribed"),
    "reject": ("rejected", "blocked"),
}
UNKNOWN = ("unknown", None)


@dataclass(frozen=True)
class TrackingEvent:
    """One normalized tracking event. ``timestamp`` is ISO 8601 UTC."""

    event_type: str
    mailtrap_event: str
    timestamp: str
    message_id: str
    recipient: str | None = None
    event_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    reject_reason: str | None = None
    bounce_category: str | None = None
    mta_response: str | None = None
    response_code: int | None = None
    reason: str | None = None
    click_url: str | None = None
    user_agent: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field."""
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["metadata"] = dict(self.metadata)
        return data


def normalize_event(raw: Mapping[str, Any]) -> TrackingEvent:
    """Normalize one raw Mailtrap event.

    Raises ``ValidationError`` (``field`` set) when ``event``, ``message_id`` or
    ``timestamp`` is missing or malformed. Optional fields of the wrong type are
    dropped rather than rejected: one odd field must not make Mailtrap retry
    (and finally pause) a whole batch.
    """
    if not isinstance(raw, Mapping):
        raise ValidationError("not an event object", field=None)
    name = _required_str(raw, "event")
    message_id = _required_str(raw, "message_id")
    event_type, reject_reason = EVENT_TYPES.get(name.strip().lower(), UNKNOWN)
    category = raw.get("category")
    variables = raw.get("custom_variables")
    return TrackingEvent(
        event_type=event_type,
        mailtrap_event=name,
        timestamp=_timestamp(raw),
        message_id=message_id,
        recipient=_optional_str(raw, "email"),
        event_id=_optional_str(raw, "event_id"),
        tags=(category,) if isinstance(category, str) and category else (),
        metadata=_json_safe(dict(variables)) if isinstance(variables, Mapping) else {},
        reject_reason=reject_reason,
        bounce_category=_optional_str(raw, "bounce_category"),
        mta_response=_optional_str(raw, "response"),
        response_code=_optional_int(raw, "response_code"),
        reason=_optional_str(raw, "reason"),
        click_url=_optional_str(raw, "url"),
        user_agent=_optional_str(raw, "user_agent"),
    )


def _json_safe(value: Any) -> Any:
    """``value`` with each non-finite number as its text: stored events are strict JSON.

    Python's JSON reader takes ``NaN`` and ``Infinity``, which no JSON writer
    of another language reads back.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _required_str(raw: Mapping[str, Any], name: str) -> str:
    if name not in raw or raw[name] is None:
        raise ValidationError(f'missing "{name}"', field=name)
    value = raw[name]
    if not isinstance(value, str) or not value:
        raise ValidationError(f'"{name}" must be a non-empty string', field=name)
    return value


def _timestamp(raw: Mapping[str, Any]) -> str:
    if "timestamp" not in raw or raw["timestamp"] is None:
        raise ValidationError('missing "timestamp"', field="timestamp")
    value = raw["timestamp"]
    # bool is an int subclass, and true is not a time.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError('"timestamp" must be a number (unix seconds)', field="timestamp")
    try:
        if not math.isfinite(value):
            raise ValueError("not finite")
        moment = datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValidationError('"timestamp" is out of range', field="timestamp") from None
    return iso_utc(moment)


def iso_utc(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC; a fraction of a second is kept only when there is one."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _optional_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) else None


def _optional_int(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
