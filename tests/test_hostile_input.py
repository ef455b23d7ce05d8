"""Hostile input: whatever a caller or a webhook sends, mailqueue raises only its own
validation errors, stays within bounded memory, and never names a Redis key after it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailqueue
from mailqueue.client import default as current
from mailqueue.core.payload import build_payload
from mailqueue.settings import Settings
from mailqueue.store import keys
from mailqueue.store.status import PartRef, PartResult
from mailqueue.webhooks import TrackingApp, create_app

SETTINGS = Settings(api_token="hostile-test-token")
BASE: dict[str, Any] = {
    "from_email": "Shop <shop@example.com>",
    "to": ["alice@example.com"],
    "subject": "Hello",
    "text": "Body",
}
TEMPLATE = "7f1b6a36-0000-4000-8000-000000000003"
FIXTURES_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def nested(depth: int, leaf: Any = "x", as_list: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
text_with_surrogate = st.builds(
    lambda head, bad, tail: head + bad + tail, st.text(max_size=5), surrogates, st.text(max_size=5)
)
hostile_scalars = (
    st.floats(allow_nan=True, allow_infinity=True)
    | text_with_surrogate
    | st.binary(max_size=10)
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([math.nan, math.inf, -math.inf, object(), set(), frozenset({1}), ...])
    | st.text(max_size=20)
    | st.none()
    | st.booleans()
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=5) | text_with_surrogate | st.integers(), children, max_size=3
        )
        | st.tuples(children)
    ),
    max_leaves=12,
) | st.builds(nested, st.integers(min_value=50, max_value=3000), hostile_scalars, st.booleans())

MESSAGE_FIELDS = [
    "from_email", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments",
    "headers", "tags", "metadata", "template_id", "merge_global_data", "merge_data",
    "merge_metadata", "merge_headers", "esp_extra",
]  # fmt: skip


def build_or_refuse(message: Any) -> None:
    """Build the payload; only a ValidationError (UnsupportedFeature included) may escape."""
    try:
        calls = build_payload(message, SETTINGS)
    except mailqueue.ValidationError as exc:
        # The error must itself be printable: logs encode it as UTF-8.
        str(exc).encode("utf-8")
        return
    for call in calls:
        # What is accepted is strict JSON, encodable as UTF-8 for Redis and Mailtrap.
        json.dumps(call.json, allow_nan=False, ensure_ascii=False).encode("utf-8")


# -- message dicts -----------------------------------------------------------


@given(field=st.sampled_from(MESSAGE_FIELDS), value=hostile_values)
def test_any_hostile_value_in_any_field_raises_only_validation_error(
    field: str, value: Any
) -> None:
    build_or_refuse({**BASE, field: value})


@given(field=st.sampled_from(["metadata", "merge_global_data", "esp_extra", "headers"]),
       key=st.text(max_size=8), value=hostile_values)  # fmt: skip
def test_hostile_values_nested_in_dict_fields_raise_only_validation_error(
    field: str, key: str, value: Any
) -> None:
    build_or_refuse({**BASE, field: {key: value}})


@given(message=st.dictionaries(st.sampled_from(MESSAGE_FIELDS) | st.text(), hostile_values))
def test_whole_hostile_messages_raise_only_validation_error(message: dict[Any, Any]) -> None:
    build_or_refuse(message)


@pytest.mark.parametrize("as_list", [False, True], ids=["dicts", "lists"])
@pytest.mark.parametrize("field", ["metadata", "merge_global_data", "esp_extra"])
def test_nesting_far_beyond_the_recursion_limit_is_a_validation_error(
    field: str, as_list: bool
) -> None:
    message = {**BASE, field: {"deep": nested(20_000, as_list=as_list)}}
    if field == "merge_global_data":
        message = {"from_email": BASE["from_email"], "to": BASE["to"], "template_id": TEMPLATE,
                   field: message[field]}  # fmt: skip

    with pytest.raises(mailqueue.ValidationError) as info:
        build_payload(message, SETTINGS)

    assert info.value.field is not None and info.value.field.startswith(field)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("subject", "a\ud800b", "subject"),
        ("to", ["\udcff@example.com"], "to[0]"),
        ("headers", {"X-Note": "\udfff"}, "headers.X-Note"),
        ("metadata", {"order": "\ud83d"}, "metadata.order"),
        ("attachments", [{"filename": "\ud800.txt", "content": "eA==", "mimetype": "text/plain"}],
         "attachments[0].filename"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_refused_naming_the_field(field: str, value: Any, named: str) -> None:
    with pytest.raises(mailqueue.ValidationError) as info:
        build_payload({**BASE, field: value}, SETTINGS)

    assert info.value.field == named


def test_nan_metadata_travels_as_a_string_never_as_bare_nan() -> None:
    (call,) = build_payload({**BASE, "metadata": {"score": math.nan}}, SETTINGS)

    json.dumps(call.json, allow_nan=False)


# -- memory -------------------------------------------------------------------


def peak_bytes(action: Any) -> int:
    tracemalloc.start()
    with contextlib.suppress(mailqueue.ValidationError):
        action()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_an_oversized_body_is_refused_within_a_small_multiple_of_its_size() -> None:
    size = 30 * 1024 * 1024
    message = {**BASE, "text": "x" * size}

    peak = peak_bytes(lambda: build_payload(message, SETTINGS))

    assert peak < 4 * size


def test_a_million_recipients_are_refused_without_parsing_them_all() -> None:
    message = {**BASE, "to": [f"user{i}@example.com" for i in range(1_000_000)]}

    peak = peak_bytes(lambda: build_payload(message, SETTINGS))

    assert peak < 20 * 1024 * 1024


# -- Django messages (only when the queued backend exists) ---------------------

django = pytest.importorskip("django")
from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(SECRET_KEY="test-only", DEFAULT_CHARSET="utf-8", USE_TZ=True)
    django.setup()

from django.core.mail import EmailMultiAlternatives  # noqa: E402

from mailqueue.django.backend import to_message_dict  # noqa: E402

django_text = st.text(max_size=30) | text_with_surrogate | st.just("\x00\r\n")


@given(
    subject=django_text,
    body=django_text,
    to=st.lists(django_text | st.emails(), max_size=3),
    headers=st.dictionaries(st.text(max_size=10), django_text, max_size=3),
    alternative=st.tuples(django_text, st.sampled_from(["text/html", "text/x-amp-html", ""])),
    metadata=hostile_values,
)
def test_hostile_django_messages_raise_only_mailqueue_errors(
    subject: str,
    body: str,
    to: list[str],
    headers: dict[str, str],
    alternative: tuple[str, str],
    metadata: Any,
) -> None:
    message = EmailMultiAlternatives(subject, body, "shop@example.com", to, headers=headers)
    message.attach_alternative(*alternative)
    message.metadata = metadata  # type: ignore[attr-defined]
    try:
        converted = to_message_dict(message, SETTINGS)
    except mailqueue.ValidationError:
        return
    build_or_refuse(converted)


# -- Redis keys ---------------------------------------------------------------

HOSTILE_IDS = [
    "*",
    "{mq}:send:*",
    "../../etc/passwd",
    "a\nb",
    "a\r\nSET mq:evil 1",
    "x" * 100_000,
    "",
    " ",
    "\udcff",
    "id with spaces",
    "[a-z]?",
]


@pytest.fixture
def configured(redis_url: str) -> Iterator[None]:
    mailqueue.configure(Settings(broker_url=redis_url, api_token="hostile-test-token"))
    yield


def snapshot(client: redis.Redis) -> dict[bytes, Any]:
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


@pytest.mark.parametrize("send_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_get_status_with_a_hostile_id_is_none_and_reads_no_key(
    configured: None, redis_client: redis.Redis, send_id: str
) -> None:
    real = mailqueue.enqueue(BASE)
    before = snapshot(redis_client)
    lookups = _keyspace_lookups(redis_client)

    assert mailqueue.get_status(send_id) is None

    assert _keyspace_lookups(redis_client) == lookups
    assert snapshot(redis_client) == before
    assert mailqueue.get_status(real) is not None


def _keyspace_lookups(client: redis.Redis) -> int:
    stats = client.info("stats")
    return int(stats["keyspace_hits"]) + int(stats["keyspace_misses"])


@pytest.fixture
def tracking_app(redis_url: str, redis_client: redis.Redis) -> TrackingApp:
    webhook_settings = Settings(broker_url=redis_url, webhook_secret=("hooks:s3cret",))
    return create_app(webhook_settings, redis_client=redis_client)


def post_events(app: TrackingApp, events: list[dict[str, Any]]) -> int:
    body = json.dumps({"events": events}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/mailtrap/tracking/",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"hooks:s3cret").decode(),
        "wsgi.input": io.BytesIO(body),
    }
    seen: list[str] = []
    b"".join(app(environ, lambda status, headers: seen.append(status)))
    return int(seen[0].split()[0])


KEY_SHAPES = {
    "{mq}:send:", "{mq}:rcpt:", "{mq}:events:", "{mq}:msgid:", "{mq}:evt:", "{mq}:idem:",
    "{mq}:group:", "{mq}:dead:",
}  # fmt: skip


def assert_keys_built_from_safe_ids(client: redis.Redis) -> None:
    for raw in client.scan_iter(count=1000):
        key = raw.decode("utf-8")
        for prefix in KEY_SHAPES:
            if key.startswith(prefix):
                assert keys.safe_id(key[len(prefix) :]), key
                break


@FIXTURES_OK
@given(message_id=st.text(max_size=300) | st.sampled_from(HOSTILE_IDS[:-2]),
       event_id=st.text(max_size=300) | st.sampled_from(HOSTILE_IDS[:-2]))  # fmt: skip
def test_webhook_events_with_hostile_ids_write_no_key_named_after_them(
    tracking_app: TrackingApp, redis_client: redis.Redis, message_id: str, event_id: str
) -> None:
    event = {
        "event": "delivery",
        "message_id": message_id,
        "event_id": event_id,
        "email": "alice@example.com",
        "timestamp": 1_700_000_000,
    }

    status = post_events(tracking_app, [event])

    assert status in (200, 400)
    for raw in redis_client.scan_iter(count=1000):
        # The prefix is a hash tag, "{mq}": its braces are no part of a key's name.
        key = raw.decode("utf-8", "replace").removeprefix("{mq}:")
        if not keys.safe_id(message_id):
            assert message_id not in key or not message_id
        if not keys.safe_id(event_id):
            assert event_id not in key or not event_id
    assert_keys_built_from_safe_ids(redis_client)


def test_webhook_event_for_a_known_message_with_a_hostile_event_id_updates_no_extra_key(
    configured: None, tracking_app: TrackingApp, redis_client: redis.Redis
) -> None:
    send_id = mailqueue.enqueue(BASE)
    with redis_client.pipeline() as pipe:
        store = current().store
        store.record(pipe, PartRef(send_id, 0), PartResult("sent", {"alice@example.com": "mid-1"}))
        pipe.execute()
    before = set(redis_client.scan_iter(count=1000))

    event = {
        "event": "open",
        "message_id": "mid-1",
        "event_id": "../\n*",
        "email": "alice@example.com",
        "timestamp": 1_700_000_000,
    }

    status = post_events(tracking_app, [event])

    assert status in (200, 400)
    after = set(redis_client.scan_iter(count=1000))
    assert not any(b"../" in key or b"\n" in key for key in after - before)
    assert_keys_built_from_safe_ids(redis_client)
