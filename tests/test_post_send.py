"""What Anymail's post_send receivers are handed: the status objects and the rebuilt message."""

from __future__ import annotations

import pytest

django = pytest.importorskip("django")
pytest.importorskip("anymail")

from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(SECRET_KEY="test-only", DEFAULT_CHARSET="utf-8", USE_TZ=True)
    django.setup()

from mailqueue.django.signals import anymail_status, rebuilt_message  # noqa: E402
from mailqueue.records import RecipientStatus, StatusRecord  # noqa: E402


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
