"""What the demo sends, and the tracking events it posts as Mailtrap would, signed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import requests

from mailqueue.demo.errors import DemoError

__all__ = [
    "DEMO_TRACKING_SECRET",
    "LOCAL_FROM",
    "LOCAL_RECIPIENTS",
    "LOCAL_TEMPLATE_ID",
    "check_tracked",
    "example_messages",
    "lost_answer_message",
    "post_events",
    "tracking_events",
]

# Signs the simulated tracking events; only the demo's own webhook sees it.
DEMO_TRACKING_SECRET = "mailqueue-demo-tracking-secret"
LOCAL_FROM = "Demo Shop <shop@example.com>"
LOCAL_TEMPLATE_ID = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
LOCAL_RECIPIENTS = ("alice@example.com", "bob@example.com", "carol@example.com")


def example_messages(
    recipients: Sequence[str], sender: str, template_id: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """The messages the demo sends, each with a label: plain, template batch, attachment."""
    messages: list[tuple[str, dict[str, Any]]] = [
        (
            "plain",
            {
                "from_email": sender,
                "to": [recipients[0]],
                "subject": "Your order has shipped",
                "text": "Order 1001 is on its way.",
                "html": "<p>Order <b>1001</b> is on its way.</p>",
                "tags": ["shipping"],
                "metadata": {"order": "1001"},
            },
        ),
    ]
    if template_id:
        messages.append(
            (
                "template batch",
                {
                    "from_email": sender,
                    "to": list(recipients),
                    # Discount codes are promotional: Mailtrap wants them on its bulk stream.
                    "stream": "bulk",
                    "template_id": template_id,
                    "merge_global_data": {"shop": "Demo Shop"},
                    "merge_data": {
                        address: {"name": address.split("@")[0].title(), "code": f"SAVE{n}"}
                        for n, address in enumerate(recipients, start=10)
                    },
                },
            )
        )
    receipt = b"Order 1001: 2 x tea, 1 x mug\n"
    messages.append(
        (
            "attachment",
            {
                "from_email": sender,
                "to": [recipients[-1]],
                "subject": "Your receipt",
                "text": "Your receipt is attached.",
                "attachments": [
                    {
                        "filename": "receipt.txt",
                        "content": base64.b64encode(receipt).decode("ascii"),
                        "mimetype": "text/plain",
                    }
                ],
            },
        )
    )
    return messages


def lost_answer_message(recipients: Sequence[str], sender: str) -> dict[str, Any]:
    """The message the demo sends while the local Mailtrap drops the answer to its call."""
    return {
        "from_email": sender,
        "to": [recipients[0]],
        "subject": "Your order has been delivered",
        "text": "Order 1001 was delivered today.",
    }


def _event(name: str, recipient: str, message_id: str, **extra: Any) -> dict[str, Any]:
    """One event as Mailtrap posts it."""
    return {
        "event": name,
        "message_id": message_id,
        "email": recipient,
        "timestamp": int(time.time()),
        "event_id": str(uuid.uuid4()),
        "sending_stream": "transactional",
        "sending_domain_name": "example.com",
        **extra,
    }


def tracking_events(
    records: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events for every accepted recipient: (delivery and one bounce, then opens and a click)."""
    pairs = [
        (address, info["message_id"])
        for record in records
        for address, info in record["recipients"].items()
        if info.get("message_id")
    ]
    if not pairs:
        raise DemoError("Mailtrap returned no message ids")
    bounced = pairs[-1] if len(pairs) > 2 else None
    delivery = [
        _event(
            "bounce",
            address,
            message_id,
            bounce_category="badrecipient",
            response="550 5.1.1 user unknown",
            response_code=550,
        )
        if (address, message_id) == bounced
        else _event("delivery", address, message_id)
        for address, message_id in pairs
    ]
    first_address, first_id = pairs[0]
    engagement = [
        _event("open", first_address, first_id, user_agent="Mozilla/5.0"),
        _event(
            "click",
            first_address,
            first_id,
            url="https://example.com/orders/1001",
            user_agent="Mozilla/5.0",
        ),
    ]
    # One more open, by someone else who was not bounced.
    others = [pair for pair in pairs[1:-1] if pair[0] != first_address]
    if others:
        engagement.append(_event("open", *others[0], user_agent="Mozilla/5.0"))
    return delivery, engagement


def post_events(url: str, events: Sequence[dict[str, Any]]) -> None:
    body = json.dumps({"events": list(events)}).encode()
    signature = hmac.new(DEMO_TRACKING_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = requests.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Mailtrap-Signature": signature},
        timeout=10,
    )
    if answer.status_code != 200:
        raise DemoError(f"the webhook answered {answer.status_code}: {answer.text[:200]}")


_EXPECTED = {"delivery": "delivered", "bounce": "bounced", "open": "opened", "click": "clicked"}
_RANK = ("delivered", "opened", "clicked")


def check_tracked(records: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
    """Every recipient ends at the furthest status its events reached."""
    expected: dict[tuple[str, str], str] = {}
    for event in events:
        key = (event["email"], event["message_id"])
        status = _EXPECTED[event["event"]]
        old = expected.get(key)
        if old is None or (old in _RANK and _RANK.index(status) > _RANK.index(old)):
            expected[key] = status
    for record in records:
        for address, info in record["recipients"].items():
            want = expected.get((address, info.get("message_id")))
            if want is not None and info["status"] != want:
                raise DemoError(f"{address} is {info['status']}, expected {want} after its events")
