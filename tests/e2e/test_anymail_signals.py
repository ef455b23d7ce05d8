"""An app written for Anymail gets pre_send, post_send (from the worker) and tracking."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
import redis
import requests
from django.conf import settings as django_settings

from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess
from mailqueue.testing.wsgi import serving

from .helpers import wait_final

pytest.importorskip("anymail")

if not django_settings.configured:
    django_settings.configure(
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from anymail.message import AnymailMessage
from django.core.mail import get_connection
from django.core.wsgi import get_wsgi_application
from django.test import override_settings

from .anymail_app import receivers

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BASIC = "Basic " + base64.b64encode(b"hook:pass").decode()


@pytest.fixture
def anymail_project(
    mailtrap: LocalMailtrap, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """This process as the Django project: its app's receivers connected, its settings."""
    for name in ("MAILQUEUE_WEBHOOK_SECRET", "MAILTRAP_TRACKING_SECRET", "MAILQUEUE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTCOME_RECEIVER_REDIS_URL", redis_url)
    receivers.connect()
    try:
        with override_settings(
            ROOT_URLCONF="tests.e2e.anymail_app.urls",
            ALLOWED_HOSTS=["127.0.0.1"],
            ANYMAIL={
                "MAILTRAP_API_TOKEN": mailtrap.token,
                "MAILTRAP_API_URL": mailtrap.url,
                "WEBHOOK_SECRET": "hook:pass",
            },
            MAILQUEUE_BROKER_URL=redis_url,
        ):
            yield
    finally:
        receivers.disconnect()


def signals_noted(client: redis.Redis, name: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll until a receiver noted ``name``; every entry noted so far."""
    deadline = time.monotonic() + timeout
    while True:
        entries = [json.loads(raw) for raw in client.lrange(receivers.LIST, 0, -1)]
        if any(entry["signal"] == name for entry in entries):
            return entries
        assert time.monotonic() < deadline, f"no {name} signal; got {entries}"
        time.sleep(0.05)


def test_an_anymail_app_gets_pre_send_post_send_from_the_worker_and_tracking(
    anymail_project: None,
    make_settings: Callable[..., Settings],
    mailtrap: LocalMailtrap,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.e2e.anymail_app.settings",
        "OUTCOME_RECEIVER_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    with WorkerProcess(make_settings(), concurrency=1, extra_env=env) as worker:
        message = AnymailMessage(
            subject="Your receipt",
            body="Thanks for your order",
            from_email="Shop <shop@example.com>",
            to=["alice@example.com", "Bob <bob@example.com>"],
            tags=["receipts"],
            metadata={"order": "1234"},
            connection=get_connection("mailqueue.django.EmailBackend"),
        )
        assert message.send() == 1
        send_id = message.mailqueue_send_id
        record = wait_final([send_id])[send_id]
        noted = signals_noted(redis_client, "post_send")
        worker_pid = worker.process.pid if worker.process else None

    ids = {email: entry["message_id"] for email, entry in record["recipients"].items()}
    (pre,) = [entry for entry in noted if entry["signal"] == "pre_send"]
    assert pre == {
        "signal": "pre_send",
        "pid": os.getpid(),
        "subject": "Your receipt",
        "esp": "Mailtrap",
    }
    (post,) = [entry for entry in noted if entry["signal"] == "post_send"]
    assert post["pid"] not in (os.getpid(), None) and worker_pid is not None
    assert post["esp"] == "Mailtrap"
    assert post["sender"] == "mailqueue.django.backend.EmailBackend"
    assert post["send_id"] == send_id
    assert post["subject"] == "Your receipt"
    assert post["from_email"] == "Shop <shop@example.com>"
    assert post["to"] == ["alice@example.com", "Bob <bob@example.com>"]
    assert post["tags"] == ["receipts"] and post["metadata"] == {"order": "1234"}
    assert post["same_status"] is True
    assert post["status"] == ["queued"]
    assert post["message_ids"] == sorted(ids.values())
    assert post["recipients"] == {
        "alice@example.com": [ids["alice@example.com"], "queued"],
        "bob@example.com": [ids["bob@example.com"], "queued"],
    }

    event = {
        "event": "delivery",
        "message_id": ids["alice@example.com"],
        "email": "alice@example.com",
        "event_id": "evt-delivery-1",
        "timestamp": int(time.time()),
        "sending_stream": "transactional",
    }
    with serving(get_wsgi_application()) as base_url:
        answer = requests.post(
            base_url + "/anymail/mailtrap/tracking/",
            data=json.dumps({"events": [event]}),
            headers={"Authorization": BASIC, "Content-Type": "application/json"},
            timeout=5,
        )
    assert answer.status_code == 200
    (tracked,) = [e for e in signals_noted(redis_client, "tracking") if e["signal"] == "tracking"]
    assert tracked == {
        "signal": "tracking",
        "pid": os.getpid(),
        "esp": "Mailtrap",
        "event_type": "delivered",
        "message_id": ids["alice@example.com"],
        "recipient": "alice@example.com",
    }
