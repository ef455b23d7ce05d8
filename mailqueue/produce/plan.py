"""Where and when a validated message waits: campaign, stream, account, first try, expiry."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mailqueue.core.schedule import schedule_of
from mailqueue.errors import ValidationError

__all__ = ["Plan", "plan_of"]


@dataclass(frozen=True)
class Plan:
    """Where and when a validated message waits: its campaign, first attempt and expiry."""

    campaign: str | None = None
    stream: str = "transactional"
    account: str | None = None
    due: float | None = None
    send_at: float | None = None
    expires_at: float | None = None


def plan_of(message: Mapping[str, Any], celery_options: dict[str, Any]) -> Plan:
    """The message's plan; ``send_at`` and Celery's ``countdown``/``eta``: the later wins.

    ``countdown`` and ``eta`` are popped from ``celery_options``.
    """
    due = _due(celery_options)
    schedule = schedule_of(message)
    if schedule.send_at is not None and (due is None or schedule.send_at > due):
        due = schedule.send_at
    if schedule.expires_at is not None and due is not None and schedule.expires_at <= due:
        raise ValidationError("expires_at must come after send_at", field="expires_at")
    return Plan(
        campaign=message.get("campaign"),
        stream=message.get("stream") or "transactional",
        account=message.get("account"),
        due=due,
        send_at=schedule.send_at,
        expires_at=schedule.expires_at,
    )


def _due(options: dict[str, Any]) -> float | None:
    """Pop ``countdown``/``eta`` from Celery options: when the first attempt may start."""
    countdown = options.pop("countdown", None)
    eta = options.pop("eta", None)
    if eta is not None:
        if not isinstance(eta, datetime):
            raise ValidationError("eta must be a datetime", field="eta")
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)
        return eta.timestamp()
    if countdown is not None:
        try:
            return time.time() + max(float(countdown), 0.0)
        except (TypeError, ValueError):
            raise ValidationError("countdown must be a number", field="countdown") from None
    return None
