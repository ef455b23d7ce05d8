"""Parse a webhook request body into normalized events (pure, no I/O).

Mailtrap sends either JSON ``{"events": [...]}`` or JSON Lines (one event
object per line), as configured per webhook. The body itself tells which:
Content-Type is not trusted, since Mailtrap sets the same one for both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mailqueue.core.events import TrackingEvent, normalize_event
from mailqueue.errors import ValidationError

__all__ = ["parse_body"]


def parse_body(body: bytes) -> list[TrackingEvent]:
    """The events of a webhook body, in order.

    Raises ``ValidationError`` with a short reason naming where the body is
    wrong, e.g. ``events[3]: missing "message_id"`` or ``line 2: not valid JSON``.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("body is not valid UTF-8", field="body") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ValidationError("body is empty", field="body")
    try:
        document = _loads(text)
    except ValueError:
        return _normalize_all(_json_lines(text))
    if isinstance(document, dict):
        if "events" in document:
            events = document["events"]
            if not isinstance(events, list):
                raise ValidationError('"events" must be a list', field="events")
            return _normalize_all((f"events[{i}]", item) for i, item in enumerate(events))
        if not document:
            # Anymail answers {} with 200 and no events; keep that.
            return []
        # A JSON Lines body of a single event is also one JSON document.
        return _normalize_all([("line 1", document)])
    raise ValidationError(
        'body must be {"events": [...]} or JSON Lines of event objects', field="body"
    )


def _json_lines(text: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"line {number}", _loads(line)))
        except ValueError:
            raise ValidationError(f"line {number}: not valid JSON", field="body") from None
    return items


def _normalize_all(items: Iterable[tuple[str, Any]]) -> list[TrackingEvent]:
    events = []
    for where, item in items:
        if not isinstance(item, dict):
            raise ValidationError(f"{where}: not an event object", field=where)
        try:
            events.append(normalize_event(item))
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc}", field=f"{where}.{exc.field}") from None
    return events


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    # NaN and Infinity are Python extensions, not JSON; a document nested
    # deeper than the parser can recurse is not an event either.
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
