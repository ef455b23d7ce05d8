"""Anymail's signals, so that an app written for Anymail keeps its receivers.

``pre_send`` goes out in the producer, before a message is queued; a receiver
raising ``AnymailCancelSend`` keeps it out of the queue. ``tracking`` goes out
from the Django webhook view, once per event, with Anymail's event objects.
Without django-anymail installed there is no receiver to tell, and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..webhooks.events import TrackingEvent

__all__ = ["ESP_NAME", "run_pre_send", "send_tracking_signals", "to_anymail_event"]

ESP_NAME = "Mailtrap"

try:
    from anymail.exceptions import AnymailCancelSend
    from anymail.signals import AnymailTrackingEvent, pre_send, tracking
except ImportError:  # pragma: no cover - django-anymail is optional
    AnymailCancelSend = None
    pre_send = tracking = None


def run_pre_send(sender: type, message: Any) -> bool:
    """Send ``pre_send`` for ``message``; False when a receiver cancelled it."""
    if pre_send is None:
        return True
    try:
        pre_send.send(sender, message=message, esp_name=ESP_NAME)
    except AnymailCancelSend:
        return False
    return True


def to_anymail_event(event: TrackingEvent) -> Any:
    """Anymail's ``AnymailTrackingEvent`` for one normalized event."""
    return AnymailTrackingEvent(
        event_type=event.event_type,
        timestamp=datetime.fromisoformat(event.timestamp.replace("Z", "+00:00")),
        event_id=event.event_id,
        esp_event=event.to_json(),
        message_id=event.message_id,
        recipient=event.recipient,
        tags=list(event.tags),
        metadata=dict(event.metadata),
        reject_reason=event.reject_reason,
        mta_response=event.mta_response,
        description=event.reason,
        click_url=event.click_url,
        user_agent=event.user_agent,
    )


def send_tracking_signals(events: Sequence[TrackingEvent]) -> None:
    """Anymail's ``tracking`` signal for each event, in the order Mailtrap posted them."""
    if tracking is None:
        return
    for event in events:
        tracking.send(sender=TrackingEvent, event=to_anymail_event(event), esp_name=ESP_NAME)
