"""The tracking webhook mounted in a Django project, through Django's test client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import django
import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client, override_settings
from django.urls import include, path, reverse

from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult, now_iso
from mailqueue.store.stores import Stores

if not django_settings.configured:
    django_settings.configure(
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        DATABASES={},
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        USE_TZ=True,
    )
    django.setup()

urlpatterns = [
    path("anymail/", include("mailqueue.django.urls")),
    path("ops/mail/", include("mailqueue.django.dashboard")),
]

URL = "/anymail/mailtrap/tracking/"
SECRET = "0123456789abcdef0123456789abcdef"
BASIC = "Basic " + base64.b64encode(b"hook:pass").decode()
MESSAGE_ID = "0c7fd939-02cf-11ed-88c2-0a58a9feac02"


@pytest.fixture
def django_project(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MAILQUEUE_WEBHOOK_SECRET", "MAILTRAP_TRACKING_SECRET", "MAILQUEUE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    with override_settings(
        ROOT_URLCONF=__name__,
        ANYMAIL={"WEBHOOK_SECRET": "hook:pass"},
        MAILQUEUE_REDIS_URL=redis_url,
    ):
        yield


@pytest.fixture
def client(django_project: None) -> Client:
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def send_id(redis_client: redis.Redis) -> str:
    store = Stores.over(redis_client, Settings()).store
    with redis_client.pipeline() as pipe:
        store.create(pipe, "dj-1", parts=1, created_at=now_iso())
        store.record(pipe, PartRef("dj-1", 0), PartResult("sent", {"to@example.com": MESSAGE_ID}))
        pipe.execute()
    return "dj-1"


def delivery(event_id: str = "e1", name: str = "delivery") -> dict[str, Any]:
    return {
        "event": name,
        "message_id": MESSAGE_ID,
        "email": "to@example.com",
        "timestamp": 1714564800,
        "event_id": event_id,
    }


def post(client: Client, body: bytes, url: str = URL, **headers: str) -> Any:
    headers.setdefault("Authorization", BASIC)
    return client.post(url, data=body, content_type="application/json", headers=headers)


def recipient_status(client: redis.Redis, send_id: str) -> str:
    record = Stores.over(client, Settings()).store.get(send_id)
    assert record is not None
    return str(record["recipients"]["to@example.com"]["status"])


def test_a_tracking_post_updates_the_recipient(
    client: Client, redis_client: redis.Redis, send_id: str
) -> None:
    answer = post(client, json.dumps({"events": [delivery()]}).encode())
    assert answer.status_code == 200
    assert recipient_status(redis_client, send_id) == "delivered"


def test_json_lines_are_accepted(client: Client, redis_client: redis.Redis, send_id: str) -> None:
    body = (json.dumps(delivery("e1")) + "\n" + json.dumps(delivery("e2", "open")) + "\n").encode()
    assert post(client, body).status_code == 200
    assert recipient_status(redis_client, send_id) == "opened"


def test_the_url_has_a_name(django_project: None) -> None:
    assert reverse("mailqueue_mailtrap_tracking") == URL


def test_the_url_without_a_trailing_slash_is_served(client: Client) -> None:
    assert post(client, b'{"events": []}', url=URL.rstrip("/")).status_code == 200


def test_wrong_basic_auth_is_401(client: Client, redis_client: redis.Redis, send_id: str) -> None:
    wrong = "Basic " + base64.b64encode(b"hook:nope").decode()
    answer = post(client, json.dumps({"events": [delivery()]}).encode(), Authorization=wrong)
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == 'Basic realm="mailqueue"'
    assert recipient_status(redis_client, send_id) == "queued"


def test_the_signing_secret_comes_from_the_anymail_settings(
    client: Client, redis_client: redis.Redis, send_id: str
) -> None:
    body = json.dumps({"events": [delivery()]}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    with override_settings(ANYMAIL={"MAILTRAP_TRACKING_SECRET": SECRET}):
        unsigned = post(client, body, Authorization="")
        forged = post(client, body, Authorization="", **{"Mailtrap-Signature": "0" * 64})
        signed = post(client, body, Authorization="", **{"Mailtrap-Signature": signature})
    assert (unsigned.status_code, forged.status_code, signed.status_code) == (401, 401, 200)
    assert recipient_status(redis_client, send_id) == "delivered"


def test_a_bad_body_is_400_with_a_reason(client: Client) -> None:
    answer = post(client, b'{"events": [{"event": "delivery"}]}')
    assert answer.status_code == 400
    assert answer.content.decode().strip() == 'events[0]: missing "message_id"'


def test_a_body_past_the_bound_is_413(client: Client) -> None:
    with override_settings(MAILQUEUE_WEBHOOK_MAX_BODY=100):
        assert post(client, b" " * 101).status_code == 413


def test_get_is_405(client: Client) -> None:
    answer = client.get(URL)
    assert answer.status_code == 405
    assert answer["Allow"] == "POST, HEAD, OPTIONS"


def test_head_is_200(client: Client) -> None:
    assert client.head(URL).status_code == 200


def test_every_event_reaches_anymail_tracking_receivers_as_anymail_events(
    client: Client, redis_client: redis.Redis, send_id: str
) -> None:
    from anymail.signals import AnymailTrackingEvent, tracking

    received: list[tuple[str, Any]] = []

    def receiver(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
        received.append((esp_name, event))

    tracking.connect(receiver)
    try:
        body = {"events": [delivery("e1"), {**delivery("e2", "click"), "url": "https://x.test/"}]}
        assert post(client, json.dumps(body).encode()).status_code == 200
    finally:
        tracking.disconnect(receiver)
    assert [name for name, _ in received] == ["Mailtrap", "Mailtrap"]
    first, second = (event for _, event in received)
    assert isinstance(first, AnymailTrackingEvent)
    assert (first.event_type, first.event_id, first.message_id) == ("delivered", "e1", MESSAGE_ID)
    assert first.recipient == "to@example.com" and first.timestamp.timestamp() == 1714564800
    assert (second.event_type, second.click_url) == ("clicked", "https://x.test/")
    assert recipient_status(redis_client, send_id) == "clicked"


def test_a_failing_tracking_receiver_does_not_make_mailtrap_post_again(
    client: Client, redis_client: redis.Redis, send_id: str
) -> None:
    from anymail.signals import tracking

    def receiver(**kwargs: Any) -> None:
        raise RuntimeError("the app's bug")

    tracking.connect(receiver)
    try:
        assert post(client, json.dumps({"events": [delivery()]}).encode()).status_code == 200
    finally:
        tracking.disconnect(receiver)
    assert recipient_status(redis_client, send_id) == "delivered"


def test_the_dashboard_is_served_from_the_urlconf_with_its_own_auth_and_token(
    client: Client, redis_url: str
) -> None:
    import re
    from urllib.parse import urlencode

    from mailqueue.client import client_for_settings

    ops = "Basic " + base64.b64encode(b"ops:pw").decode()
    queued = client_for_settings(Settings(broker_url=redis_url, api_token="t"))
    queued.enqueue_many(
        [{"from_email": "a@example.com", "to": ["b@example.com"], "subject": "S", "text": "T"}],
        campaign="june",
    )
    with override_settings(MAILQUEUE_DASHBOARD_SECRET="ops:pw", MAILQUEUE_BROKER_URL=redis_url):
        assert client.get("/ops/mail/").status_code == 401
        page = client.get("/ops/mail/campaigns/june", headers={"Authorization": ops})
        assert page.status_code == 200
        html = page.content.decode()
        assert 'src="/ops/mail/static/dashboard.js"' in html
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert found is not None
        form = {"name": "june", "csrf": found.group(1)}
        answer = client.post(
            "/ops/mail/action/pause",
            urlencode(form),
            content_type="application/x-www-form-urlencoded",
            headers={"Authorization": ops},
        )
        assert answer.status_code == 303 and answer["Location"] == "/ops/mail/campaigns/june"
    campaign_record = queued.get_campaign("june")
    assert campaign_record is not None and campaign_record["state"] == "paused"


def test_the_django_dashboard_bounds_forms_and_throttles_failed_logins(
    client: Client, redis_url: str
) -> None:
    ops = "Basic " + base64.b64encode(b"ops:pw-throttle").decode()
    wrong = "Basic " + base64.b64encode(b"ops:guess").decode()
    big = "csrf=x&name=" + "a" * 8000
    with override_settings(
        MAILQUEUE_DASHBOARD_SECRET="ops:pw-throttle", MAILQUEUE_BROKER_URL=redis_url
    ):
        too_big = client.post("/ops/mail/action/pause", big,
                              content_type="application/x-www-form-urlencoded",
                              headers={"Authorization": ops})  # fmt: skip
        failures = [
            client.get("/ops/mail/", headers={"Authorization": wrong}).status_code
            for _ in range(25)
        ]
        throttled_post = client.post("/ops/mail/action/pause", "name=x",
                                     content_type="application/x-www-form-urlencoded",
                                     headers={"Authorization": ops})  # fmt: skip

    assert too_big.status_code == 413
    assert failures[:20] == [401] * 20 and failures[20:] == [429] * 5
    assert throttled_post.status_code == 429
