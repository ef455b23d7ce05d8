"""Send through a worker, then feed the webhook the events Mailtrap would send: statuses follow."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
import requests

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess
from mailqueue.testing.wsgi import serving
from mailqueue.webhooks import create_app

from .helpers import wait_final

pytestmark = pytest.mark.e2e

SECRET = "whsec-e2e-0123456789abcdef"


@pytest.fixture
def webhook_url(settings: Settings) -> Iterator[str]:
    with serving(create_app(settings.replace(tracking_secret=SECRET))) as base_url:
        yield base_url + "/mailtrap/tracking/"


def post_events(url: str, events: list[dict[str, object]]) -> requests.Response:
    body = json.dumps({"events": events}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return requests.post(url, data=body, headers={"Mailtrap-Signature": signature}, timeout=5)


def event(kind: str, message_id: str, email: str, n: int, **extra: object) -> dict[str, object]:
    return {
        "event": kind,
        "message_id": message_id,
        "email": email,
        "event_id": f"evt-{kind.replace(' ', '-')}-{n}",
        "timestamp": int(time.time()) + n,
        "sending_stream": "transactional",
        **extra,
    }


def test_webhook_events_move_recipients_to_delivered_opened_bounced(
    mailtrap: LocalMailtrap, worker: WorkerProcess, webhook_url: str
) -> None:
    send_id = mailqueue.enqueue(
        {
            "from_email": "shop@example.com",
            "to": ["alice@example.com", "bob@example.com", "carol@example.com"],
            "subject": "Hello",
            "text": "Hi",
        }
    )
    record = wait_final([send_id])[send_id]
    ids = {email: r["message_id"] for email, r in record["recipients"].items()}

    answer = post_events(
        webhook_url,
        [
            event("delivery", ids["alice@example.com"], "alice@example.com", 1),
            event("delivery", ids["bob@example.com"], "bob@example.com", 2),
            event("open", ids["bob@example.com"], "bob@example.com", 3, user_agent="Mail/1.0"),
            event(
                "bounce",
                ids["carol@example.com"],
                "carol@example.com",
                4,
                response="550 5.1.1 no such user",
                bounce_category="badrecipient",
            ),
            # A late delivery must not undo the open.
            event("delivery", ids["bob@example.com"], "bob@example.com", 5),
            event("delivery", "not-one-of-ours", "x@example.com", 6),
        ],
    )

    assert answer.status_code == 200
    status = mailqueue.get_status(send_id)
    assert status is not None
    assert status["state"] == "sent"
    recipients = status["recipients"]
    assert recipients["alice@example.com"]["status"] == "delivered"
    assert recipients["bob@example.com"]["status"] == "opened"
    assert recipients["carol@example.com"]["status"] == "bounced"
    assert recipients["carol@example.com"]["message_id"] == ids["carol@example.com"]


def test_a_replayed_webhook_batch_changes_nothing(
    mailtrap: LocalMailtrap, worker: WorkerProcess, webhook_url: str
) -> None:
    send_id = mailqueue.enqueue(
        {"from_email": "shop@example.com", "to": ["dora@example.com"], "subject": "s", "text": "t"}
    )
    record = wait_final([send_id])[send_id]
    message_id = record["recipients"]["dora@example.com"]["message_id"]
    batch = [event("click", message_id, "dora@example.com", 1, url="https://example.com/x")]

    assert post_events(webhook_url, batch).status_code == 200
    first = mailqueue.get_status(send_id)
    assert post_events(webhook_url, batch).status_code == 200

    assert mailqueue.get_status(send_id) == first
    assert first is not None and first["recipients"]["dora@example.com"]["status"] == "clicked"


def test_a_wrong_signature_is_refused_and_records_nothing(
    mailtrap: LocalMailtrap, worker: WorkerProcess, webhook_url: str
) -> None:
    send_id = mailqueue.enqueue(
        {"from_email": "shop@example.com", "to": ["eve@example.com"], "subject": "s", "text": "t"}
    )
    record = wait_final([send_id])[send_id]
    message_id = record["recipients"]["eve@example.com"]["message_id"]
    body = json.dumps({"events": [event("delivery", message_id, "eve@example.com", 1)]})

    answer = requests.post(
        webhook_url, data=body, headers={"Mailtrap-Signature": "0" * 64}, timeout=5
    )

    assert answer.status_code == 401
    status = mailqueue.get_status(send_id)
    assert status is not None and status["recipients"]["eve@example.com"]["status"] == "queued"
