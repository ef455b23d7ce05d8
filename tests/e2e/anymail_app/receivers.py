"""Receivers as an Anymail app writes them; each notes what it got in Redis.

The list ``test:signals`` of the Redis at ``OUTCOME_RECEIVER_REDIS_URL``
holds one JSON entry per signal, with the process that received it.
"""

from __future__ import annotations

import os
from typing import Any

from anymail.signals import post_send, pre_send, tracking

from ..outcome_receivers import note

LIST = "test:signals"


def on_pre_send(sender: Any, message: Any, esp_name: str, **kwargs: Any) -> None:
    note(
        {"signal": "pre_send", "pid": os.getpid(), "subject": message.subject, "esp": esp_name},
        LIST,
    )


def on_post_send(sender: Any, message: Any, status: Any, esp_name: str, **kwargs: Any) -> None:
    note(
        {
            "signal": "post_send",
            "pid": os.getpid(),
            "esp": esp_name,
            "sender": f"{sender.__module__}.{sender.__qualname__}",
            "send_id": message.mailqueue_send_id,
            "subject": message.subject,
            "from_email": message.from_email,
            "to": message.to,
            "tags": message.tags,
            "metadata": message.metadata,
            "same_status": message.anymail_status is status,
            "status": sorted(status.status),
            "message_ids": sorted(status.message_id)
            if isinstance(status.message_id, set)
            else [status.message_id],
            "recipients": {
                email: [one.message_id, one.status] for email, one in status.recipients.items()
            },
        },
        LIST,
    )


def on_tracking(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    note(
        {
            "signal": "tracking",
            "pid": os.getpid(),
            "esp": esp_name,
            "event_type": event.event_type,
            "message_id": event.message_id,
            "recipient": event.recipient,
        },
        LIST,
    )


def connect() -> None:
    pre_send.connect(on_pre_send)
    post_send.connect(on_post_send)
    tracking.connect(on_tracking)


def disconnect() -> None:
    pre_send.disconnect(on_pre_send)
    post_send.disconnect(on_post_send)
    tracking.disconnect(on_tracking)
