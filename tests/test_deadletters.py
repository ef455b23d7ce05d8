"""Dead letters: list, requeue and purge sends that failed for good (real Redis and HTTP)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis

import mailqueue
from mailqueue.client import default
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.keys import Keys
from mailqueue.testing import LocalMailtrap

MESSAGE = {"from_email": "shop@example.com", "to": ["ann@example.com"], "subject": "S", "text": "T"}


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap() as server:
        yield server


@pytest.fixture
def settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    configured = Settings(
        api_token=mailtrap.token,
        api_url=mailtrap.url,
        broker_url=redis_url,
        rate_limit=RateLimit.parse("1000/1s"),
        max_retries=0,
        # A 200 with an HTML body fails for good here; when reconciling it is
        # an unknown outcome, looked up in Email Logs instead.
        reconcile=False,
    )
    mailqueue.configure(configured)
    return configured


def drain() -> None:
    drainer = Drainer(default().drain_parts)
    try:
        drainer.drain(budget=10)
    finally:
        drainer.close()


def failed_send(mailtrap: LocalMailtrap) -> str:
    """A send that failed permanently: Mailtrap answered 200 with an HTML body."""
    mailtrap.inject("nonjson")
    send_id = mailqueue.enqueue(MESSAGE)
    drain()
    status_record = mailqueue.get_status(send_id)
    assert status_record is not None and status_record["state"] == "failed"
    return send_id


def test_a_permanently_failed_send_is_listed_with_its_error(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    send_id = failed_send(mailtrap)

    [letter] = default().list_dead_letters()

    assert letter.send_id == send_id
    assert letter.state == "failed"
    assert letter.error is not None and letter.error["kind"] == "permanent"


def test_a_requeued_send_is_delivered_when_mailtrap_accepts_it(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    send_id = failed_send(mailtrap)

    assert default().requeue_dead_letters([send_id]) == 1
    drain()

    record: Mapping[str, Any] = mailqueue.get_status(send_id) or {}
    assert record["state"] == "sent"
    assert record["error"] is None
    assert record["recipients"]["ann@example.com"]["status"] == "queued"
    assert [m.recipients for m in mailtrap.accepted] == [("ann@example.com",)]


def test_a_requeued_send_leaves_the_dead_letter_set(
    settings: Settings, mailtrap: LocalMailtrap, redis_client: redis.Redis
) -> None:
    send_id = failed_send(mailtrap)

    default().requeue_dead_letters([send_id])

    assert default().list_dead_letters() == []
    assert not redis_client.exists(Keys().dead_letter(send_id))


def test_requeue_without_ids_takes_every_dead_letter(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    failed_send(mailtrap)
    failed_send(mailtrap)

    assert default().requeue_dead_letters() == 2


def test_an_id_that_is_not_a_dead_letter_is_skipped(settings: Settings) -> None:
    send_id = mailqueue.enqueue(MESSAGE)

    assert default().requeue_dead_letters([send_id]) == 0
    status_record = mailqueue.get_status(send_id)
    assert status_record is not None and status_record["state"] == "queued"


def test_a_malformed_id_is_a_validation_error_naming_its_position(settings: Settings) -> None:
    with pytest.raises(mailqueue.ValidationError) as info:
        default().requeue_dead_letters(["ok", "no spaces allowed"])

    assert info.value.field == "send_ids[1]"


def test_purge_forgets_only_the_ids_given(settings: Settings, mailtrap: LocalMailtrap) -> None:
    first = failed_send(mailtrap)
    second = failed_send(mailtrap)

    assert default().purge_dead_letters([first]) == 1

    assert [letter.send_id for letter in default().list_dead_letters()] == [second]
    status_record = mailqueue.get_status(first)
    assert status_record is not None and status_record["state"] == "failed"
