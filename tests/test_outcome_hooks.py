"""The outcome hooks' settings and the Celery task hook, on a real Redis broker."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis

from mailqueue.client import Client
from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import ApiCall
from mailqueue.deliver.hooks import Endings, OutcomeHooks
from mailqueue.errors import ConfigurationError
from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult
from mailqueue.tasks.worker_checks import check_worker_settings

CALL = ApiCall("send", {"to": [{"email": "a@example.com"}], "subject": "Hi"}, (("a@example.com",),))


@pytest.fixture
def make_client(redis_url: str) -> Iterator[object]:
    made: list[Client] = []

    def build(**overrides: object) -> Client:
        client = Client(Settings(broker_url=redis_url, **overrides))  # type: ignore[arg-type]
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def send_one(client: Client, send_id: str) -> Envelope:
    """Create and record a one-part send; the envelope whose write made it final."""
    envelope = Envelope(send_id=send_id, part=0, body=CALL)
    endings = Endings()
    with client.redis.pipeline(transaction=True) as pipe:
        client.store.create(pipe, send_id, parts=1, created_at="2026-01-01T00:00:00.000Z")
        result = PartResult("sent", {"a@example.com": "m-1"})
        endings.add(client.store.record(pipe, PartRef(send_id, 0), result), envelope)
        finished = endings.finished(pipe.execute())
    assert finished == [envelope]
    return envelope


def test_the_task_hook_is_sent_by_name_to_its_queue_with_the_send_id_and_record(
    make_client, redis_client: redis.Redis
) -> None:
    client = make_client(on_outcome_task="shop.tasks.mail_done", on_outcome_queue="shop")
    envelope = send_one(client, "s1")

    OutcomeHooks(client).announce([envelope])

    (raw,) = redis_client.lrange("shop", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "shop.tasks.mail_done"
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    assert args[0] == "s1"
    assert args[1]["state"] == "sent"
    assert args[1]["recipients"] == {"a@example.com": {"status": "queued", "message_id": "m-1"}}


def test_a_hook_that_cannot_be_imported_is_a_configuration_error_naming_the_setting(
    make_client,
) -> None:
    client = make_client(on_outcome="shop.nowhere.mail_done")

    with pytest.raises(ConfigurationError) as info:
        OutcomeHooks(client)

    assert info.value.setting == "on_outcome"
    assert "shop.nowhere.mail_done" in str(info.value)


def test_a_worker_with_a_hook_it_cannot_import_refuses_to_start() -> None:
    settings = Settings(api_token="t", on_outcome="shop.nowhere.mail_done")

    with pytest.raises(ConfigurationError) as info:
        check_worker_settings(settings)

    assert info.value.setting == "on_outcome"


def test_a_hook_path_without_a_module_is_refused(make_client) -> None:
    client = make_client(on_outcome="mail_done")

    with pytest.raises(ConfigurationError, match=r"package\.module\.name"):
        OutcomeHooks(client)


def test_without_receivers_nothing_is_read_or_sent(make_client, redis_client) -> None:
    client = make_client()
    envelope = send_one(client, "s1")
    hooks = OutcomeHooks(client)

    hooks.announce([envelope])

    assert not hooks.wanted
    assert redis_client.keys("celery*") == []


def test_the_hook_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MAILQUEUE_ON_OUTCOME": "shop.hooks:mail_done",
            "MAILQUEUE_ON_OUTCOME_TASK": "shop.tasks.mail_done",
            "MAILQUEUE_ON_OUTCOME_QUEUE": "shop",
        }
    )

    assert settings.on_outcome == "shop.hooks:mail_done"
    assert settings.on_outcome_task == "shop.tasks.mail_done"
    assert settings.on_outcome_queue == "shop"


def test_a_send_refused_in_the_worker_is_told_once(make_client, redis_client) -> None:
    client = make_client(on_outcome_task="shop.tasks.mail_done", on_outcome_queue="shop")
    error = {"kind": "validation", "status_code": None, "message": "to[0]: not an address"}

    assert client.store.create_rejected("t1", error) is True
    OutcomeHooks(client).announce_refused("t1")
    # A redelivered task finds the record: nothing is told again.
    assert client.store.create_rejected("t1", error) is False

    (raw,) = redis_client.lrange("shop", 0, -1)
    args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert args[0] == "t1" and args[1]["state"] == "failed"
    assert args[1]["error"]["kind"] == "validation"
