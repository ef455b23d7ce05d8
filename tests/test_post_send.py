"""What Anymail's post_send receivers are handed: the status objects and the rebuilt message."""

from __future__ import annotations

import pytest

django = pytest.importorskip("django")
pytest.importorskip("anymail")

from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(SECRET_KEY="test-only", DEFAULT_CHARSET="utf-8", USE_TZ=True)
    django.setup()

from anymail.signals import post_send  # noqa: E402

from mailqueue.client import Client  # noqa: E402
from mailqueue.core.envelope import Envelope  # noqa: E402
from mailqueue.core.payload import ApiCall  # noqa: E402
from mailqueue.deliver.hooks import Endings  # noqa: E402
from mailqueue.django.backend import EmailBackend  # noqa: E402
from mailqueue.django.signals import anymail_status, rebuilt_message  # noqa: E402
from mailqueue.records import RecipientStatus, StatusRecord  # noqa: E402
from mailqueue.settings import Settings  # noqa: E402
from mailqueue.store.status import PartRef, PartResult  # noqa: E402


def record_with(recipients: dict[str, RecipientStatus]) -> StatusRecord:
    return {
        "id": "s1",
        "state": "partially_sent",
        "attempts": 1,
        "created_at": None,
        "updated_at": None,
        "error": None,
        "recipients": recipients,
        "parts": 1,
        "possible_duplicates": 0,
        "reconciled": 0,
        "reconcile_fallbacks": 0,
    }


def test_each_recipient_gets_anymails_status_for_what_mailtrap_answered() -> None:
    status = anymail_status(
        record_with(
            {
                "a@example.com": {"status": "delivered", "message_id": "m-1"},
                "b@example.com": {"status": "failed", "message_id": None},
                "c@example.com": {"status": "suppressed", "message_id": None},
            }
        )
    )

    assert {email: (s.message_id, s.status) for email, s in status.recipients.items()} == {
        "a@example.com": ("m-1", "queued"),
        "b@example.com": (None, "failed"),
        "c@example.com": (None, "rejected"),
    }
    assert status.status == {"queued", "failed", "rejected"}
    assert status.message_id == {"m-1", None}


def test_one_recipients_status_has_its_bare_message_id() -> None:
    status = anymail_status(record_with({"a@example.com": {"status": "queued", "message_id": "m"}}))

    assert status.message_id == "m"
    assert status.status == {"queued"}


def test_a_batch_call_is_rebuilt_with_its_base_and_every_requests_recipients() -> None:
    body = {
        "base": {
            "from": {"email": "news@example.com", "name": "News"},
            "subject": "Hello {{name}}",
            "html": "<p>hi</p>",
            "category": "newsletter",
        },
        "requests": [
            {"to": [{"email": "a@example.com"}], "custom_variables": {"n": "1"}},
            {"to": [{"email": "b@example.com", "name": "B"}], "cc": [{"email": "c@example.com"}]},
        ],
    }

    message = rebuilt_message(body, "s1")

    assert message.from_email == "News <news@example.com>"
    assert message.to == ["a@example.com", "B <b@example.com>"]
    assert message.cc == ["c@example.com"]
    assert message.subject == "Hello {{name}}"
    assert message.alternatives[0][0] == "<p>hi</p>"
    assert message.tags == ["newsletter"]
    assert message.metadata == {"n": "1"}
    assert message.mailqueue_send_id == "s1"


def test_the_django_integration_sends_post_send_for_every_clients_final_outcomes(
    redis_url: str,
) -> None:
    # Importing mailqueue.django (done above, with its backend) connected post_send.
    got: list[tuple[object, object, object]] = []

    def receiver(sender: object, message: object, status: object, **_: object) -> None:
        got.append((sender, message, status))

    body = {"to": [{"email": "a@example.com"}], "subject": "Hi"}
    call = ApiCall("send", body, (("a@example.com",),))
    envelope = Envelope(send_id="s1", part=0, body=call)
    client = Client(Settings(broker_url=redis_url))
    post_send.connect(receiver)
    try:
        endings = Endings()
        with client.redis.pipeline(transaction=True) as pipe:
            client.store.create(pipe, "s1", parts=1, created_at="2026-01-01T00:00:00.000Z")
            result = PartResult("sent", {"a@example.com": "m-1"})
            endings.add(client.store.record(pipe, PartRef("s1", 0), result), envelope)
            client.outcome_hooks.announce(endings.finished(pipe.execute()))
    finally:
        post_send.disconnect(receiver)
        client.close()

    ((sender, message, status),) = got
    assert sender is EmailBackend
    assert message.subject == "Hi" and message.to == ["a@example.com"]  # type: ignore[attr-defined]
    assert message.anymail_status is status  # type: ignore[attr-defined]
    assert status.message_id == "m-1"  # type: ignore[attr-defined]
