"""Properties of the tracking webhook: no input makes it fail, no order moves a status back."""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailqueue.core.events import EVENT_TYPES
from mailqueue.errors import ValidationError
from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult, now_iso
from mailqueue.store.stores import Stores
from mailqueue.testing.wsgi import serving
from mailqueue.webhooks import STATUS_RANK, TrackingApp, create_app, normalize_event

AUTH = "Basic " + base64.b64encode(b"user:pass").decode()
MAX_BODY = 4096
ACCEPTABLE = {200, 400, 413}
FIXTURES_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
event_names = st.sampled_from([*EVENT_TYPES, "inbound", "unknown-thing"]) | st.text()
eventish = st.fixed_dictionaries(
    {},
    optional={
        "event": event_names | json_values,
        "message_id": st.sampled_from(["m1", "m 2", ""]) | json_values,
        "timestamp": st.integers() | st.floats() | json_values,
        "event_id": st.text() | json_values,
        "email": st.emails() | json_values,
        "category": json_values,
        "custom_variables": json_values,
        "response_code": json_values,
    },
)


def call(app: TrackingApp, body: bytes, method: str = "POST") -> int:
    """Call the WSGI app in-process; the answer's status code."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/mailtrap/tracking/",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": AUTH,
        "wsgi.input": io.BytesIO(body),
    }
    seen: list[str] = []
    chunks = app(environ, lambda status, headers: seen.append(status))
    b"".join(chunks)
    return int(seen[0].split()[0])


@pytest.fixture
def app(redis_url: str) -> TrackingApp:
    return create_app(
        Settings(webhook_secret=("user:pass",), redis_url=redis_url, webhook_max_body=MAX_BODY)
    )


@FIXTURES_OK
@given(body=st.binary(max_size=MAX_BODY + 100))
def test_arbitrary_bytes_never_fail(app: TrackingApp, body: bytes) -> None:
    assert call(app, body) in ACCEPTABLE


@FIXTURES_OK
@given(document=json_values)
def test_arbitrary_json_never_fails(app: TrackingApp, document: Any) -> None:
    assert call(app, json.dumps(document).encode()) in ACCEPTABLE


@FIXTURES_OK
@given(events=st.lists(eventish | json_values, max_size=8))
def test_arbitrary_event_lists_never_fail(app: TrackingApp, events: list[Any]) -> None:
    assert call(app, json.dumps({"events": events}).encode()) in ACCEPTABLE


@FIXTURES_OK
@given(lines=st.lists(eventish | json_values | st.text(), max_size=8))
def test_arbitrary_json_lines_never_fail(app: TrackingApp, lines: list[Any]) -> None:
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    assert call(app, body.encode()) in ACCEPTABLE


@given(raw=eventish)
def test_normalizing_gives_a_json_event_or_a_validation_error(raw: dict[str, Any]) -> None:
    try:
        event = normalize_event(raw)
    except ValidationError as exc:
        assert exc.field in ("event", "message_id", "timestamp")
    else:
        json.dumps(event.to_json(), allow_nan=False)


@pytest.fixture
def url(app: TrackingApp) -> Iterator[str]:
    with serving(app) as base_url:
        yield base_url + "/mailtrap/tracking/"


@settings(
    max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(body=st.binary(max_size=MAX_BODY + 100) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_over_http_never_fail(url: str, body: bytes) -> None:
    answer = requests.post(url, data=body, headers={"Authorization": AUTH}, timeout=10)
    assert answer.status_code in ACCEPTABLE


_send_numbers = itertools.count()


@FIXTURES_OK
@given(names=st.lists(st.sampled_from(sorted(EVENT_TYPES)), min_size=1, max_size=12))
def test_a_recipient_ends_at_the_furthest_status_whatever_the_order(
    redis_client: redis.Redis, names: list[str]
) -> None:
    send_id = f"prop-{next(_send_numbers)}"
    message_id = f"{send_id}-m"
    status_store = Stores.over(redis_client, Settings()).store
    with redis_client.pipeline() as pipe:
        status_store.create(pipe, send_id, parts=1, created_at=now_iso())
        status_store.record(
            pipe, PartRef(send_id, 0), PartResult("sent", {"a@example.com": message_id})
        )
        pipe.execute()
    store = Stores.over(redis_client, Settings()).events
    for number, name in enumerate(names):
        raw = {
            "event": name,
            "message_id": message_id,
            "timestamp": 1,
            "event_id": f"{send_id}-{number}",
        }
        store.apply([normalize_event(raw)], now_iso())
    expected = max((EVENT_TYPES[n][0] for n in names), key=lambda s: STATUS_RANK[s])
    record = status_store.get(send_id)
    assert record is not None
    assert STATUS_RANK[record["recipients"]["a@example.com"]["status"]] == STATUS_RANK[expected]
