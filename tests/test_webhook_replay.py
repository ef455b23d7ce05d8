"""Replayed webhooks: Mailtrap's signatures carry no time, so a captured request stays valid.
Event ids are remembered past every retry Mailtrap makes, and an event dated before an
operator lifted a suppression never suppresses the address again."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import pytest
import redis

from mailqueue.settings import Settings
from mailqueue.store import keys
from mailqueue.store.keys import Keys
from mailqueue.store.status import PartRef, PartResult, now_iso
from mailqueue.store.stores import Stores
from mailqueue.store.suppressions import SuppressionList
from mailqueue.webhooks import TrackingApp, create_app

HOOK = "mailtrap:hook-pass"
ADDRESS = "bounced@example.com"
MESSAGE_ID = "7c1e0f8a-0000-4000-8000-00000000b0b0"


@pytest.fixture
def app(redis_url: str, redis_client: redis.Redis) -> TrackingApp:
    store = Stores.over(redis_client, Settings()).store
    with redis_client.pipeline() as pipe:
        store.create(pipe, "send-1", parts=1, created_at=now_iso())
        store.record(pipe, PartRef("send-1", 0), PartResult("sent", {ADDRESS: MESSAGE_ID}))
        pipe.execute()
    return create_app(Settings(redis_url=redis_url, webhook_secret=(HOOK,)))


@pytest.fixture
def suppressions(redis_client: redis.Redis) -> SuppressionList:
    return SuppressionList(redis_client, Keys(), soft_bounce_limit=3, soft_bounce_days=7.0)


def post(app: TrackingApp, *events: dict[str, Any]) -> int:
    body = json.dumps({"events": list(events)}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/mailtrap/tracking/",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(HOOK.encode()).decode(),
        "wsgi.input": io.BytesIO(body),
    }
    seen: list[str] = []
    b"".join(app(environ, lambda status, headers: seen.append(status)))
    return int(seen[0].split()[0])


def event(name: str, event_id: str, timestamp: float, **extra: Any) -> dict[str, Any]:
    return {"event": name, "message_id": MESSAGE_ID, "email": ADDRESS, "event_id": event_id,
            "timestamp": timestamp, **extra}  # fmt: skip


def forget_event_ids(client: redis.Redis) -> None:
    """As if the ids had expired: a replay long after the capture."""
    for key in client.scan_iter(match=Keys().event_seen("*")):
        client.delete(key)


def test_a_replayed_bounce_does_not_suppress_an_address_lifted_since(
    app: TrackingApp, redis_client: redis.Redis, suppressions: SuppressionList
) -> None:
    captured = event("bounce", "evt-bounce-1", time.time() - 3600, bounce_category="badrecipient")
    assert post(app, captured) == 200
    assert suppressions.get(ADDRESS) is not None
    suppressions.unsuppress(ADDRESS)

    assert post(app, captured) == 200  # within the id's memory: a duplicate
    forget_event_ids(redis_client)
    assert post(app, captured) == 200  # past it: dated before the lift

    assert suppressions.get(ADDRESS) is None


def test_soft_bounces_from_before_the_lift_count_no_more(
    app: TrackingApp, redis_client: redis.Redis, suppressions: SuppressionList
) -> None:
    before = time.time() - 3600
    suppressions.suppress(ADDRESS, reason="manual")
    suppressions.unsuppress(ADDRESS)

    for index in range(5):
        assert post(app, event("soft bounce", f"evt-soft-{index}", before + index)) == 200

    assert suppressions.get(ADDRESS) is None


def test_a_new_bounce_after_the_lift_suppresses_again(
    app: TrackingApp, suppressions: SuppressionList
) -> None:
    suppressions.suppress(ADDRESS, reason="manual")
    suppressions.unsuppress(ADDRESS)

    assert post(app, event("bounce", "evt-bounce-new", time.time() + 5)) == 200

    assert suppressions.get(ADDRESS) is not None


def test_the_lift_is_remembered_after_a_sync_passed_it_on(
    app: TrackingApp, redis_client: redis.Redis, suppressions: SuppressionList
) -> None:
    suppressions.suppress(ADDRESS, reason="manual")
    suppressions.unsuppress(ADDRESS)
    suppressions.forget_lifted(suppressions.lifted())  # what a sync with Mailtrap does

    assert post(app, event("spam", "evt-spam-old", time.time() - 60)) == 200

    assert suppressions.get(ADDRESS) is None


def test_event_ids_are_remembered_longer_than_mailtrap_retries(
    app: TrackingApp, redis_client: redis.Redis
) -> None:
    assert keys.MAILTRAP_WEBHOOK_RETRY_SECONDS >= 40 * 5 * 60
    assert post(app, event("delivery", "evt-delivery-1", time.time())) == 200

    ttl = redis_client.ttl(Keys().event_seen("evt-delivery-1"))

    assert ttl > keys.MAILTRAP_WEBHOOK_RETRY_SECONDS
