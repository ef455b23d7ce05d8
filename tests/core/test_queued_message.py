"""A validated message as it waits in the outbox: its JSON form, restored the same (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailqueue.core.message import normalize_message
from mailqueue.core.queued_message import QueuedMessage, form_of, names_sender, part_forms
from mailqueue.settings import Settings

SETTINGS = Settings(default_from_email="Shop <shop@example.com>")


def queued(message: dict[str, Any]) -> QueuedMessage:
    msg = normalize_message(message, SETTINGS)
    form = form_of(msg, named_sender=names_sender(message))
    return QueuedMessage.checked(json.loads(json.dumps(form)))  # as it comes back from Redis


def test_a_message_survives_its_json_form_unchanged() -> None:
    message = {
        "from_email": "Ünïcode Sender <sender@example.com>",
        "to": ["a@example.com", "B <b@example.com>"],
        "cc": ["c@example.com"],
        "reply_to": ["r@example.com"],
        "subject": "Hello",
        "text": "Hi",
        "headers": {"X-Thing": "1"},
        "metadata": {"order": "42"},
        "attachments": [{"filename": "a.txt", "content": "aGk=", "mimetype": "text/plain"}],
    }
    original = normalize_message(message, SETTINGS)

    restored = queued(message).message

    assert restored == original


def test_a_plain_address_is_stored_as_its_addr_spec_and_a_named_one_whole() -> None:
    form = form_of(
        normalize_message(
            {
                "from_email": "S <s@example.com>",
                "to": ["t@example.com"],
                "subject": "s",
                "text": "t",
            },
            SETTINGS,
        ),
        named_sender=True,
    )
    assert form["to"] == ["t@example.com"]
    assert isinstance(form["from"], list) and form["from"][0] == "S"


def test_a_message_without_a_sender_is_marked_so_that_a_worker_may_use_its_own() -> None:
    without = queued({"to": ["t@example.com"], "subject": "s", "text": "t"})
    named = queued(
        {"from_email": "s@example.com", "to": ["t@example.com"], "subject": "s", "text": "t"}
    )
    by_header = {
        "to": ["t@example.com"],
        "subject": "s",
        "text": "t",
        "headers": {"from": "h@example.com"},
    }

    assert not without.named_sender
    assert named.named_sender
    assert names_sender(by_header)


def test_a_single_send_lists_every_recipient_in_one_request() -> None:
    message = {
        "from_email": "s@example.com",
        "to": ["a@example.com"],
        "cc": ["c@example.com"],
        "bcc": ["d@example.com"],
        "subject": "s",
        "text": "t",
    }
    assert queued(message).recipients == (("a@example.com", "c@example.com", "d@example.com"),)


def test_a_batch_part_holds_only_its_share_of_the_to_list_and_of_the_merge_data() -> None:
    to = [f"r{i}@example.com" for i in range(5)]
    message = {
        "from_email": "s@example.com",
        "to": to,
        "cc": ["c@example.com"],
        "subject": "s",
        "text": "Hi {{name}}",
        "merge_data": {address: {"name": str(i)} for i, address in enumerate(to)},
    }
    msg = normalize_message(message, SETTINGS)

    first, second = (QueuedMessage.checked(f) for f in part_forms(msg, [3, 2], named_sender=True))

    assert first.is_batch and second.is_batch
    assert first.form["to"] == to[:3] and second.form["to"] == to[3:]
    assert set(second.form["merge_data"]) == set(to[3:])
    assert second.recipients == (
        ("r3@example.com", "c@example.com"),
        ("r4@example.com", "c@example.com"),
    )


@pytest.mark.parametrize("form", [None, [], {}, {"to": ["a@example.com"]}, {"from": 3}])
def test_what_is_not_a_queued_message_is_refused(form: object) -> None:
    with pytest.raises(ValueError, match="no sender"):
        QueuedMessage.checked(form)
