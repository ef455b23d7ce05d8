"""The queued Django email backend: Django messages in, mailqueue sends out.

Conversion is checked against django-anymail's own Mailtrap payload for the
same Django message; queueing against a real Redis; delivery with a real
Celery worker and the local Mailtrap server.
"""

from __future__ import annotations

import json
import os
from base64 import b64encode
from collections.abc import Iterator
from datetime import datetime, timezone
from email.mime.image import MIMEImage
from email.mime.text import MIMEText
from typing import Any, cast

import pytest
import redis

from mailqueue.settings import RateLimit

django = pytest.importorskip("django")

from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(SECRET_KEY="test-only", DEFAULT_CHARSET="utf-8", USE_TZ=True)
    django.setup()

from anymail.backends.mailtrap import EmailBackend as AnymailMailtrapBackend  # noqa: E402
from anymail.message import AnymailMessage  # noqa: E402
from django.core import mail  # noqa: E402
from django.core.mail import EmailMessage, EmailMultiAlternatives  # noqa: E402
from django.test import override_settings  # noqa: E402

import mailqueue  # noqa: E402
from mailqueue.core.payload import build_payload  # noqa: E402
from mailqueue.core.schedule import parse_when  # noqa: E402
from mailqueue.django import EmailBackend  # noqa: E402
from mailqueue.django.backend import to_message_dict  # noqa: E402
from mailqueue.settings import Settings  # noqa: E402
from mailqueue.store.keys import Keys  # noqa: E402
from mailqueue.testing import LocalMailtrap  # noqa: E402
from mailqueue.testing.worker import WorkerProcess  # noqa: E402
from tests.e2e.helpers import wait_final  # noqa: E402

BACKEND = "mailqueue.django.EmailBackend"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
TEMPLATE = "7f1b6a36-0000-4000-8000-000000000002"


def anymail_call(message: EmailMessage) -> tuple[str, dict[str, Any]]:
    """The path and JSON django-anymail's Mailtrap backend would post for ``message``."""
    backend = AnymailMailtrapBackend(api_token="unused")
    payload = backend.build_message_payload(message, backend.send_defaults)
    path = payload.get_api_endpoint()
    return path, json.loads(payload.serialize_data())


def our_call(message: EmailMessage, **settings: Any) -> tuple[str, dict[str, Any]]:
    (call,) = build_payload(to_message_dict(message, Settings(**settings)), Settings(**settings))
    return call.path, call.json


def rich_message() -> EmailMultiAlternatives:
    message = AnymailMessage(
        subject="Your order",
        body="It ships today.",
        from_email="Shop <shop@example.com>",
        to=["Alice <alice@example.com>"],
        cc=["bob@example.com"],
        reply_to=["help@example.com"],
        headers={"X-Order": "1234"},
        tags=["orders"],
        metadata={"order": 1234},
    )
    message.attach_alternative("<p>It ships <img src='cid:logo'> today.</p>", "text/html")
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<logo>")
    message.attach(image)
    message.attach("invoice.txt", "Total: 12 €", "text/plain")
    return message


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MAILTRAP_", "MAILQUEUE_", "ANYMAIL_")):
            monkeypatch.delenv(name)


@pytest.fixture
def queue_only(redis_url: str, clean_environ: None) -> Iterator[None]:
    """A Django project using the backend, with a real Redis and no worker."""
    with override_settings(
        EMAIL_BACKEND=BACKEND,
        DEFAULT_FROM_EMAIL="Site <site@example.com>",
        ANYMAIL={"MAILTRAP_API_TOKEN": "test-token"},
        MAILQUEUE_BROKER_URL=redis_url,
    ):
        yield


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap() as server:
        yield server


@pytest.fixture
def delivering(
    redis_url: str, mailtrap: LocalMailtrap, clean_environ: None
) -> Iterator[WorkerProcess]:
    """A Django project using the backend, a real worker, and the local Mailtrap."""
    worker_settings = Settings(
        api_token=mailtrap.token,
        api_url=mailtrap.url,
        broker_url=redis_url,
        bulk_api_url=mailtrap.bulk_url,
        connect_timeout=2.0,
        read_timeout=2.0,
        rate_limit=RateLimit.parse("1000/1s"),
    )
    with (
        override_settings(
            EMAIL_BACKEND=BACKEND,
            DEFAULT_FROM_EMAIL="Site <site@example.com>",
            ANYMAIL={"MAILTRAP_API_TOKEN": mailtrap.token, "MAILTRAP_API_URL": mailtrap.url},
            MAILQUEUE_BROKER_URL=redis_url,
        ),
        WorkerProcess(worker_settings, concurrency=2) as worker,
    ):
        yield worker
        worker.kill()  # no warm shutdown needed once the test is over


# -- conversion: the same JSON as django-anymail ---------------------------


def test_send_mail_style_message_matches_anymail() -> None:
    message = EmailMessage("Hi", "Hello there", "a@example.com", ["b@example.com"])

    assert our_call(message) == anymail_call(message)


def test_alternatives_attachments_and_anymail_attributes_match_anymail() -> None:
    message = rich_message()

    assert our_call(message) == anymail_call(message)


def test_iso_8859_1_text_attachment_keeps_its_charset_like_anymail() -> None:
    message = EmailMessage("Hi", "Hello", "a@example.com", ["b@example.com"])
    message.attach(MIMEText("Grüße", "plain", "iso-8859-1"))

    assert our_call(message) == anymail_call(message)


def test_html_only_message_matches_anymail() -> None:
    message = EmailMessage("Hi", "<b>Hello</b>", "a@example.com", ["b@example.com"])
    message.content_subtype = "html"

    assert our_call(message) == anymail_call(message)


def test_template_batch_matches_anymail() -> None:
    message = AnymailMessage(from_email="a@example.com", to=["x@example.com", "y@example.com"])
    message.template_id = TEMPLATE
    message.merge_global_data = {"company": "Example"}
    message.merge_data = {"x@example.com": {"name": "X"}, "y@example.com": {"name": "Y"}}
    message.merge_metadata = {"x@example.com": {"n": 1}, "y@example.com": {"n": 2}}
    path, body = anymail_call(message)
    # Mailtrap's schema takes custom_variables as strings; Anymail sends merged numbers.
    for request in body["requests"]:
        request["custom_variables"] = {k: str(v) for k, v in request["custom_variables"].items()}

    assert our_call(message) == (path, body)


def test_inline_image_becomes_an_inline_attachment_with_its_content_id() -> None:
    converted = to_message_dict(rich_message())

    image = converted["attachments"][0]
    assert image["inline"] is True
    assert image["content_id"] == "<logo>"
    assert image["content"] == b64encode(PNG).decode()


def test_unset_anymail_attributes_are_left_out() -> None:
    converted = to_message_dict(AnymailMessage(from_email="a@example.com", to=["b@example.com"]))

    assert set(converted) == {"from_email", "to"}


def test_missing_from_email_falls_back_to_default_from_email() -> None:
    message = EmailMessage("Hi", "Hello", None, ["b@example.com"])
    message.from_email = None

    with override_settings(DEFAULT_FROM_EMAIL="Site <site@example.com>"):
        assert to_message_dict(message)["from_email"] == "Site <site@example.com>"


def test_json_alternative_is_unsupported() -> None:
    message = EmailMultiAlternatives("Hi", "Hello", "a@example.com", ["b@example.com"])
    message.attach_alternative("{}", "application/json")

    with pytest.raises(mailqueue.UnsupportedFeature, match="application/json"):
        to_message_dict(message)


def test_json_alternative_is_dropped_when_ignoring_unsupported_features() -> None:
    message = EmailMultiAlternatives("Hi", "Hello", "a@example.com", ["b@example.com"])
    message.attach_alternative("{}", "application/json")

    converted = to_message_dict(message, Settings(ignore_unsupported_features=True))

    assert converted["text"] == "Hello"
    assert "html" not in converted


def test_send_at_datetime_is_carried_for_the_queue_to_hold() -> None:
    message = AnymailMessage(
        from_email="a@example.com", to=["b@example.com"], subject="s", body="Hello"
    )
    message.send_at = datetime(2030, 1, 1, tzinfo=timezone.utc)

    converted = to_message_dict(message)

    assert parse_when(converted["send_at"], "send_at") == message.send_at.timestamp()
    assert build_payload(converted) == build_payload({**converted, "send_at": None})


# -- queueing through Django's API (real Redis, no worker) -----------------


def test_send_mail_queues_and_returns_one(queue_only: None) -> None:
    assert mail.send_mail("Hi", "Hello", None, ["b@example.com"]) == 1


def test_send_marks_the_message_with_a_queued_send_id(queue_only: None) -> None:
    message = EmailMessage("Hi", "Hello", "a@example.com", ["b@example.com"])

    message.send()

    record = mailqueue.get_status(message.mailqueue_send_id)
    assert record is not None
    assert record["state"] == "queued"


def test_send_sets_anymail_status_queued_with_the_send_id_as_for_an_esp_that_queues(
    queue_only: None,
) -> None:
    message = AnymailMessage(
        "Hi", "Hello", "a@example.com", ["Bob <bob@example.com>"], cc=["cam@example.com"]
    )

    message.send()

    status = message.anymail_status
    send_id = message.mailqueue_send_id
    assert status.status == {"queued"}
    assert status.message_id == send_id
    assert set(status.recipients) == {"bob@example.com", "cam@example.com"}
    assert {(r.status, r.message_id) for r in status.recipients.values()} == {("queued", send_id)}


def test_every_message_of_send_messages_gets_its_own_anymail_status(queue_only: None) -> None:
    messages = [
        EmailMessage("Hi", "Hello", "a@example.com", [f"user{n}@example.com"]) for n in range(2)
    ]

    mail.get_connection(BACKEND).send_messages(messages)

    for n, message in enumerate(messages):
        assert message.anymail_status.message_id == message.mailqueue_send_id
        assert list(message.anymail_status.recipients) == [f"user{n}@example.com"]


def test_a_connection_with_its_own_token_leaves_the_process_default_alone(
    queue_only: None,
) -> None:
    mail.send_mail("Hi", "Hello", None, ["b@example.com"])
    project = mailqueue.client.default()
    message = EmailMessage("Hi", "Hello", "a@example.com", ["b@example.com"])

    mail.get_connection(api_token="another-token").send_messages([message])

    assert mailqueue.client.default() is project
    assert project.settings.api_token == "test-token"
    record = mailqueue.get_status(message.mailqueue_send_id)  # the same Redis
    assert record is not None
    assert record["state"] == "queued"


def test_send_messages_queues_every_message(queue_only: None) -> None:
    messages = [
        EmailMessage("Hi", "Hello", "a@example.com", [f"u{i}@example.com"]) for i in range(3)
    ]

    with mail.get_connection() as connection:
        count = connection.send_messages(messages)

    assert count == 3
    assert len({m.mailqueue_send_id for m in messages}) == 3


def test_invalid_message_raises_naming_it_and_queues_nothing(
    queue_only: None, redis_client: redis.Redis
) -> None:
    messages = [
        EmailMessage("Hi", "Hello", "a@example.com", ["good@example.com"]),
        EmailMessage("Hi", "Hello", "a@example.com", ["not an address"]),
    ]

    with pytest.raises(mailqueue.ValidationError) as info:
        mail.get_connection().send_messages(messages)

    assert str(info.value).startswith("messages[1]: ")
    assert info.value.field == "to[0]"
    assert redis_client.keys("{mq}:send:*") == []


def test_fail_silently_swallows_a_bad_message_and_returns_zero(
    queue_only: None, redis_client: redis.Redis
) -> None:
    sent = mail.send_mail("Hi", "Hello", "a@example.com", ["not an address"], fail_silently=True)

    assert sent == 0
    assert redis_client.keys("{mq}:send:*") == []


def test_fail_silently_queues_the_good_messages_and_counts_them(queue_only: None) -> None:
    good = EmailMessage("Hi", "Hello", "a@example.com", ["good@example.com"])
    bad = EmailMultiAlternatives("Hi", "Hello", "a@example.com", ["b@example.com"])
    bad.attach_alternative("{}", "application/json")

    count = mail.get_connection(fail_silently=True).send_messages([bad, good])

    assert count == 1
    assert mailqueue.get_status(good.mailqueue_send_id) is not None
    assert not hasattr(bad, "mailqueue_send_id")


def test_fail_silently_returns_zero_when_redis_is_unreachable(clean_environ: None) -> None:
    with override_settings(EMAIL_BACKEND=BACKEND, MAILQUEUE_BROKER_URL="redis://127.0.0.1:1/0"):
        sent = mail.send_mail("Hi", "Hello", "a@example.com", ["b@example.com"], fail_silently=True)

    assert sent == 0


def test_backend_keyword_overrides_a_setting(queue_only: None) -> None:
    backend = EmailBackend(ignore_unsupported_features=True)

    assert backend.settings.ignore_unsupported_features is True


def test_unknown_backend_keyword_is_a_configuration_error(queue_only: None) -> None:
    with pytest.raises(mailqueue.ConfigurationError) as info:
        EmailBackend(api_tokn="x")

    assert info.value.setting == "api_tokn"


def test_a_connection_for_the_bulk_stream_routes_its_messages_there(queue_only: None) -> None:
    message = EmailMessage("News", "Hello", "a@example.com", ["b@example.com"])
    chosen = EmailMessage("Receipt", "Hello", "a@example.com", ["b@example.com"])
    chosen.stream = "transactional"  # type: ignore[attr-defined]

    backend = EmailBackend(stream="bulk", account="eu")

    assert backend._message_dict(message)["stream"] == "bulk"
    assert backend._message_dict(message)["account"] == "eu"
    assert backend._message_dict(chosen)["stream"] == "transactional"


def test_an_unknown_stream_for_a_connection_is_a_configuration_error(queue_only: None) -> None:
    with pytest.raises(mailqueue.ConfigurationError) as info:
        EmailBackend(stream="promotional")

    assert info.value.setting == "stream"


# -- delivery end to end (real worker, local Mailtrap) ---------------------


@pytest.mark.e2e
def test_get_connection_stream_bulk_delivers_to_the_bulk_url(
    delivering: WorkerProcess, mailtrap: LocalMailtrap
) -> None:
    news = EmailMessage("News", "Hello", None, ["alice@example.com"])
    receipt = EmailMessage("Receipt", "Hello", None, ["alice@example.com"])

    mail.get_connection(stream="bulk").send_messages([news])
    receipt.send()
    wait_final([news.mailqueue_send_id, receipt.mailqueue_send_id])

    streams = {m.payload["subject"]: m.stream for m in mailtrap.accepted}
    assert streams == {"News": "bulk", "Receipt": "transactional"}


def untagged(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload as the message built it: without the tag the worker adds on the wire."""
    variables = {k: v for k, v in (payload.get("custom_variables") or {}).items() if k != "mq_tag"}
    rest = {k: v for k, v in payload.items() if k != "custom_variables"}
    return {**rest, "custom_variables": variables} if variables else rest


@pytest.mark.e2e
def test_send_mail_is_sent_with_exactly_the_expected_json(
    delivering: WorkerProcess, mailtrap: LocalMailtrap
) -> None:
    message = EmailMessage("Your order", "It ships today.", None, ["alice@example.com"])
    message.send()

    record = wait_final([message.mailqueue_send_id])[message.mailqueue_send_id]

    assert record["state"] == "sent"
    assert [untagged(accepted.payload) for accepted in mailtrap.accepted] == [
        {
            "from": {"email": "site@example.com", "name": "Site"},
            "to": [{"email": "alice@example.com"}],
            "subject": "Your order",
            "text": "It ships today.",
        }
    ]


@pytest.mark.e2e
def test_rich_message_arrives_as_anymail_would_send_it(
    delivering: WorkerProcess, mailtrap: LocalMailtrap
) -> None:
    message = rich_message()
    message.send()

    record = wait_final([message.mailqueue_send_id])[message.mailqueue_send_id]

    assert record["state"] == "sent"
    assert [untagged(a.payload) for a in mailtrap.accepted] == [anymail_call(message)[1]]
    attachments = mailtrap.accepted[0].payload["attachments"]
    assert attachments[0]["disposition"] == "inline"
    assert attachments[0]["content_id"] == "logo"


@pytest.mark.e2e
def test_template_id_and_merge_data_survive_the_queue(
    delivering: WorkerProcess, mailtrap: LocalMailtrap
) -> None:
    message = AnymailMessage(from_email="a@example.com", to=["x@example.com", "y@example.com"])
    message.template_id = TEMPLATE
    message.merge_data = {"x@example.com": {"name": "X"}, "y@example.com": {"name": "Y"}}
    message.send()

    record = wait_final([message.mailqueue_send_id])[message.mailqueue_send_id]

    assert record["state"] == "sent"
    received = {a.recipients[0]: a.payload for a in mailtrap.accepted}
    assert received["x@example.com"]["template_uuid"] == TEMPLATE
    assert received["x@example.com"]["template_variables"] == {"name": "X"}
    assert received["y@example.com"]["template_variables"] == {"name": "Y"}


# -- Anymail's pre_send signal ----------------------------------------------


def test_pre_send_can_change_a_message_or_cancel_it_before_it_is_queued(
    queue_only: None, redis_client: redis.Redis
) -> None:
    from anymail.exceptions import AnymailCancelSend
    from anymail.signals import pre_send

    seen: list[tuple[str, str]] = []

    def receiver(sender: type, message: EmailMessage, esp_name: str, **kwargs: Any) -> None:
        seen.append((sender.__name__, esp_name))
        if "blocked@example.com" in message.to:
            raise AnymailCancelSend("not to this one")
        message.tags = ["checked"]

    pre_send.connect(receiver)
    try:
        kept = AnymailMessage("Hi", "Text", to=["ok@example.com"])
        cancelled = AnymailMessage("Hi", "Text", to=["blocked@example.com"])
        assert mail.get_connection().send_messages([kept, cancelled]) == 1
    finally:
        pre_send.disconnect(receiver)
    assert seen == [("EmailBackend", "Mailtrap")] * 2
    assert not hasattr(cancelled, "mailqueue_send_id")
    assert mailqueue.get_status(kept.mailqueue_send_id) is not None
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(Keys().outbox))
    assert len(entries) == 1
    # What the receiver changed is what was queued.
    assert b'"checked"' in b"".join(entries[0][1].values())
