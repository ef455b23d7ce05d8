"""The tracking webhook over real HTTP on 127.0.0.1, with a real Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import requests

from mailqueue.errors import ConfigurationError
from mailqueue.records import StatusRecord
from mailqueue.settings import Settings
from mailqueue.store.keys import Keys
from mailqueue.store.status import PartRef, PartResult, now_iso
from mailqueue.store.stores import Stores
from mailqueue.testing.redis_server import free_port
from mailqueue.testing.wsgi import serving as serve_wsgi
from mailqueue.webhooks import TrackingApp, create_app

BASIC = ("mailtrap", "s3cret")
SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
MESSAGE_ID = "1df37d17-0286-4d8b-8edf-bc4ec5be86e6"


@contextmanager
def serving(app: TrackingApp) -> Iterator[str]:
    """Serve ``app`` with waitress on a free loopback port; yields the tracking URL."""
    with serve_wsgi(app) as base_url:
        yield base_url + "/mailtrap/tracking/"


def settings_for(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"webhook_secret": (":".join(BASIC),), "redis_url": redis_url}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def url_for(redis_url: str) -> Iterator[Callable[..., str]]:
    """Start the app with settings overrides; each call gives the URL of a fresh server."""
    with_stack: list[Any] = []

    def start(**overrides: Any) -> str:
        context = serving(create_app(settings_for(redis_url, **overrides)))
        with_stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(with_stack):
        context.__exit__(None, None, None)


@pytest.fixture
def url(url_for: Callable[..., str]) -> str:
    return url_for()


def make_send(client: redis.Redis, send_id: str, recipients: dict[str, str | None]) -> None:
    store = Stores.over(client, Settings()).store
    with client.pipeline() as pipe:
        store.create(pipe, send_id, parts=1, created_at=now_iso())
        store.record(pipe, PartRef(send_id, 0), PartResult("sent", recipients))
        pipe.execute()


def status_record(client: redis.Redis, send_id: str) -> StatusRecord:
    found = Stores.over(client, Settings()).store.get(send_id)
    assert found is not None
    return found


def mailtrap_event(name: str, event_id: str, **extra: Any) -> dict[str, Any]:
    """An event as Mailtrap's documentation shows them."""
    event = {
        "event": name,
        "message_id": MESSAGE_ID,
        "sending_stream": "transactional",
        "email": "receiver@example.com",
        "timestamp": 1714564800,
        "sending_domain_name": "example.com",
        "event_id": event_id,
        "category": "welcome",
        "custom_variables": {"user_id": "42"},
    }
    event.update(extra)
    return event


def as_json(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def as_json_lines(*events: dict[str, Any]) -> bytes:
    return "".join(json.dumps(event) + "\n" for event in events).encode()


def sign(body: bytes, secret: str = SIGNING_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("auth", BASIC)
    return requests.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
        timeout=10,
        **kwargs,
    )


@pytest.fixture
def alice(redis_client: redis.Redis) -> str:
    make_send(redis_client, "send-1", {"receiver@example.com": MESSAGE_ID})
    return "send-1"


def recipient_status(client: redis.Redis, send_id: str) -> str:
    return str(status_record(client, send_id)["recipients"]["receiver@example.com"]["status"])


# -- configuration ---------------------------------------------------------------


def test_the_app_refuses_to_start_without_any_credential(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="MAILQUEUE_WEBHOOK_SECRET"):
        create_app(Settings(redis_url=redis_url))


def test_settings_default_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis, alice: str
) -> None:
    monkeypatch.setenv("MAILQUEUE_WEBHOOK_SECRET", "env-user:env-pass")
    monkeypatch.setenv("MAILQUEUE_REDIS_URL", redis_url)
    with serving(create_app()) as url:
        answer = post(url, as_json(mailtrap_event("delivery", "e1")), auth=("env-user", "env-pass"))
    assert answer.status_code == 200
    assert recipient_status(redis_client, alice) == "delivered"


# -- events --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "status"),
    [
        ("delivery", {}, "delivered"),
        (
            "soft bounce",
            {
                "response": "4.2.2 mailbox full",
                "response_code": 452,
                "bounce_category": "overquota",
            },
            "deferred",
        ),
        ("suspension", {"reason": "Your account has reached its daily sending limit."}, "deferred"),
        ("open", {"ip": "192.0.2.1", "user_agent": "Mozilla/5.0"}, "opened"),
        ("click", {"url": "https://example.com/x", "user_agent": "Mozilla/5.0"}, "clicked"),
        ("unsubscribe", {"ip": "192.0.2.1", "user_agent": "Mozilla/5.0"}, "unsubscribed"),
        ("spam", {}, "complained"),
        (
            "bounce",
            {
                "response": "5.1.1 user unknown",
                "response_code": 550,
                "bounce_category": "badrecipient",
            },
            "bounced",
        ),
        ("reject", {"reason": "Recipient in suppression list. Reason: unsubscription"}, "rejected"),
    ],
)
@pytest.mark.parametrize("encode", [as_json, as_json_lines], ids=["json", "jsonlines"])
def test_every_event_type_sets_the_recipient_status(
    url: str,
    redis_client: redis.Redis,
    alice: str,
    name: str,
    extra: dict[str, Any],
    status: str,
    encode: Callable[..., bytes],
) -> None:
    answer = post(url, encode(mailtrap_event(name, "e1", **extra)))
    assert (answer.status_code, answer.content) == (200, b"")
    assert recipient_status(redis_client, alice) == status
    history = status_record(redis_client, alice)["events"]
    assert [(e["mailtrap_event"], e["event_type"]) for e in history] == [(name, status)]


def test_a_batch_is_recorded_in_order_and_ends_at_the_furthest_status(
    url: str, redis_client: redis.Redis, alice: str
) -> None:
    body = as_json(
        mailtrap_event("delivery", "e1"),
        mailtrap_event("open", "e2"),
        mailtrap_event("click", "e3", url="https://example.com/"),
    )
    assert post(url, body).status_code == 200
    assert recipient_status(redis_client, alice) == "clicked"
    assert [e["event_id"] for e in status_record(redis_client, alice)["events"]] == [
        "e3",
        "e2",
        "e1",
    ]


def test_a_late_delivery_does_not_move_an_opened_recipient_back(
    url: str, redis_client: redis.Redis, alice: str
) -> None:
    assert post(url, as_json(mailtrap_event("open", "e2"))).status_code == 200
    assert post(url, as_json(mailtrap_event("delivery", "e1"))).status_code == 200
    assert recipient_status(redis_client, alice) == "opened"


def test_a_bounced_recipient_stays_bounced(url: str, redis_client: redis.Redis, alice: str) -> None:
    assert post(url, as_json_lines(mailtrap_event("bounce", "e1"))).status_code == 200
    assert post(url, as_json_lines(mailtrap_event("open", "e2"))).status_code == 200
    assert recipient_status(redis_client, alice) == "bounced"


def test_a_redelivered_request_is_recorded_once(
    url: str, redis_client: redis.Redis, alice: str
) -> None:
    body = as_json(mailtrap_event("delivery", "e1"), mailtrap_event("open", "e2"))
    assert post(url, body).status_code == 200
    assert post(url, body).status_code == 200
    assert len(status_record(redis_client, alice)["events"]) == 2
    assert redis_client.hget(Keys().stats, "webhook_duplicates") == b"2"


def test_unknown_message_ids_are_accepted_and_counted(url: str, redis_client: redis.Redis) -> None:
    answer = post(url, as_json(mailtrap_event("delivery", "e1")))
    assert answer.status_code == 200
    assert redis_client.hget(Keys().stats, "webhook_unknown_message_ids") == b"1"


def test_an_empty_event_list_is_accepted(url: str) -> None:
    assert post(url, b'{"events": []}').status_code == 200


# -- basic auth ------------------------------------------------------------------


def test_wrong_basic_auth_is_401_with_a_challenge(
    url: str, redis_client: redis.Redis, alice: str
) -> None:
    answer = post(url, as_json(mailtrap_event("delivery", "e1")), auth=("mailtrap", "wrong"))
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="mailqueue"'
    assert recipient_status(redis_client, alice) == "queued"


def test_missing_basic_auth_is_401(url: str) -> None:
    assert post(url, as_json(), auth=None).status_code == 401


def test_a_malformed_authorization_header_is_401(url: str) -> None:
    answer = post(url, as_json(), auth=None, headers={"Authorization": "Basic !!!"})
    assert answer.status_code == 401


def test_every_rotated_credential_is_accepted(url_for: Callable[..., str]) -> None:
    url = url_for(webhook_secret=("old:one", "new:two"))
    assert post(url, as_json(), auth=("old", "one")).status_code == 200
    assert post(url, as_json(), auth=("new", "two")).status_code == 200
    assert post(url, as_json(), auth=("old", "two")).status_code == 401


# -- signature -------------------------------------------------------------------


@pytest.fixture
def signed_url(url_for: Callable[..., str]) -> str:
    return url_for(webhook_secret=(), tracking_secret=SIGNING_SECRET)


@pytest.mark.parametrize("encode", [as_json, as_json_lines], ids=["json", "jsonlines"])
def test_a_correctly_signed_request_is_accepted(
    signed_url: str, redis_client: redis.Redis, alice: str, encode: Callable[..., bytes]
) -> None:
    body = encode(mailtrap_event("delivery", "e1"))
    answer = post(signed_url, body, auth=None, headers={"Mailtrap-Signature": sign(body)})
    assert answer.status_code == 200
    assert recipient_status(redis_client, alice) == "delivered"


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        sign(as_json(mailtrap_event("delivery", "e1"))).upper(),
        sign(as_json(mailtrap_event("delivery", "e1")), "another secret"),
        sign(as_json(mailtrap_event("delivery", "e2"))),
    ],
    ids=["missing", "empty", "uppercase", "other-secret", "other-body"],
)
def test_a_wrong_signature_is_401_without_a_basic_challenge(
    signed_url: str, redis_client: redis.Redis, alice: str, signature: str | None
) -> None:
    body = as_json(mailtrap_event("delivery", "e1"))
    headers = {} if signature is None else {"Mailtrap-Signature": signature}
    answer = post(signed_url, body, auth=None, headers=headers)
    assert answer.status_code == 401
    assert "WWW-Authenticate" not in answer.headers
    assert recipient_status(redis_client, alice) == "queued"


def test_a_signature_must_cover_the_raw_body_not_a_reserialization(signed_url: str) -> None:
    body = b'{"events":  []}'
    resigned = sign(json.dumps(json.loads(body)).encode())
    answer = post(signed_url, body, auth=None, headers={"Mailtrap-Signature": resigned})
    assert answer.status_code == 401


@pytest.fixture
def both_url(url_for: Callable[..., str]) -> str:
    return url_for(tracking_secret=SIGNING_SECRET)


def test_with_both_configured_both_are_required(both_url: str) -> None:
    body = as_json()
    signature = {"Mailtrap-Signature": sign(body)}
    assert post(both_url, body, headers=signature).status_code == 200
    assert post(both_url, body, auth=None, headers=signature).status_code == 401
    assert post(both_url, body).status_code == 401
    assert post(both_url, body, auth=("mailtrap", "nope"), headers=signature).status_code == 401


# -- bad requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "line 1: not valid JSON"),
        (b"\xc3\x28", "body is not valid UTF-8"),
        (b"[1, 2]", "JSON Lines of event objects"),
        (
            json.dumps({"events": [mailtrap_event("delivery", "e1", message_id=12)]}).encode(),
            '"message_id" must be a non-empty string',
        ),
        (
            json.dumps({"events": [{}, {}, {}, {"event": "open", "timestamp": 1}]}).encode(),
            'events[0]: missing "event"',
        ),
    ],
)
def test_a_body_that_is_not_events_is_400_with_a_reason(url: str, body: bytes, reason: str) -> None:
    answer = post(url, body)
    assert answer.status_code == 400
    assert reason in answer.text


def test_the_400_reason_names_the_event_index(url: str) -> None:
    events = [mailtrap_event("open", f"e{i}") for i in range(3)]
    events.append({k: v for k, v in mailtrap_event("open", "e3").items() if k != "message_id"})
    answer = post(url, as_json(*events))
    assert (answer.status_code, answer.text.strip()) == (400, 'events[3]: missing "message_id"')


def test_a_body_past_the_bound_is_413(url_for: Callable[..., str]) -> None:
    url = url_for(webhook_max_body=1000)
    assert post(url, b" " * 1001).status_code == 413


def test_a_chunked_body_past_the_bound_is_413(url_for: Callable[..., str]) -> None:
    url = url_for(webhook_max_body=1000)
    answer = post(url, iter([b"{" + b" " * 600, b" " * 600 + b"}"]))  # type: ignore[arg-type]
    assert answer.status_code == 413


def test_a_body_at_the_bound_is_read(url_for: Callable[..., str]) -> None:
    url = url_for(webhook_max_body=1000)
    assert post(url, b"{}" + b" " * 998).status_code == 200


def test_other_methods_are_405_with_allow(url: str) -> None:
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST, HEAD, OPTIONS"


def test_head_is_200_for_url_checks(url: str) -> None:
    assert requests.head(url, timeout=10).status_code == 200


def test_the_path_without_a_trailing_slash_is_served(url: str) -> None:
    assert post(url.rstrip("/"), as_json()).status_code == 200


def test_other_paths_are_404(url: str) -> None:
    assert post(url.replace("tracking", "inbound"), as_json()).status_code == 404


def test_a_store_outage_is_503_so_that_mailtrap_retries(redis_url: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with serving(create_app(settings_for(dead))) as url:
        answer = post(url, as_json(mailtrap_event("delivery", "e1")))
    assert answer.status_code == 503


def test_serve_runs_the_app_with_waitress(
    redis_url: str, redis_client: redis.Redis, alice: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MAILQUEUE_WEBHOOK_SECRET": ":".join(BASIC),
        "MAILQUEUE_REDIS_URL": redis_url,
    }
    code = f"from mailqueue.webhooks import serve; serve(None, '127.0.0.1', {port})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        url = f"http://127.0.0.1:{port}/mailtrap/tracking/"
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = post(url, as_json(mailtrap_event("delivery", "e1")))
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert recipient_status(redis_client, alice) == "delivered"
    finally:
        process.terminate()
        process.wait(timeout=10)
