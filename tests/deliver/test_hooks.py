"""The outcome hooks' settings and the Celery task hook, on a real Redis broker."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis

from mailqueue import client as client_module
from mailqueue.client import Client, add_outcome_receiver
from mailqueue.core.envelope import Envelope
from mailqueue.core.payload import ApiCall
from mailqueue.deliver.hooks import Endings, OutcomeReceiver, receivers_from_settings
from mailqueue.errors import ConfigurationError
from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult
from mailqueue.tasks.worker_setup import check_worker_settings

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

    client.outcome_hooks.announce([envelope])

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
        receivers_from_settings(client.settings, client.send_task)

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
        receivers_from_settings(client.settings, client.send_task)


def test_without_receivers_nothing_is_read_or_sent(make_client, redis_client) -> None:
    client = make_client()
    envelope = send_one(client, "s1")
    hooks = client.outcome_hooks

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
    client.outcome_hooks.announce_refused("t1")
    # A redelivered task finds the record: nothing is told again.
    assert client.store.create_rejected("t1", error) is False

    (raw,) = redis_client.lrange("shop", 0, -1)
    args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert args[0] == "t1" and args[1]["state"] == "failed"
    assert args[1]["error"]["kind"] == "validation"


@pytest.fixture
def process_receivers(monkeypatch: pytest.MonkeyPatch) -> list[OutcomeReceiver]:
    """The process's receivers, empty for this test and forgotten after it."""
    receivers: list[OutcomeReceiver] = []
    monkeypatch.setattr(client_module, "_process_receivers", receivers)
    return receivers


def test_a_receiver_added_for_the_process_is_told_by_every_client_with_the_ending_part(
    make_client, process_receivers
) -> None:
    told: list[tuple[str, str, object]] = []
    first, second = make_client(), make_client(key_prefix="other")
    hooks = first.outcome_hooks  # built before the receiver is added: it is told all the same
    add_outcome_receiver(
        OutcomeReceiver(
            "noted", lambda send_id, record, env: told.append((send_id, record["state"], env))
        )
    )
    one, two = send_one(first, "s1"), send_one(second, "s2")

    hooks.announce([one])
    second.outcome_hooks.announce([two])

    assert told == [("s1", "sent", one), ("s2", "sent", two)]


def test_a_receiver_is_added_once(process_receivers) -> None:
    receiver = OutcomeReceiver("noted", lambda *_: None)

    add_outcome_receiver(receiver)
    add_outcome_receiver(receiver)

    assert process_receivers == [receiver]


def test_a_receiver_not_listening_has_no_record_read(make_client, process_receivers) -> None:
    client = make_client()
    envelope = send_one(client, "s1")
    add_outcome_receiver(OutcomeReceiver("deaf", lambda *_: pytest.fail("told"), lambda: False))
    client.store.get = lambda send_id: pytest.fail("read")  # type: ignore[method-assign]

    client.outcome_hooks.announce([envelope])

    assert not client.outcome_hooks.wanted


def test_a_receiver_of_calls_only_is_not_told_of_a_send_refused_in_the_worker(
    make_client, process_receivers
) -> None:
    told: list[tuple[str, str]] = []
    client = make_client()
    calls_only = OutcomeReceiver(
        "calls", lambda send_id, *_: told.append(("calls", send_id)), calls_only=True
    )
    add_outcome_receiver(calls_only)
    add_outcome_receiver(OutcomeReceiver("all", lambda send_id, *_: told.append(("all", send_id))))
    error = {"kind": "validation", "status_code": None, "message": "to[0]: not an address"}
    assert client.store.create_rejected("t1", error) is True

    client.outcome_hooks.announce_refused("t1")

    assert told == [("all", "t1")]


def test_a_receiver_that_raises_is_logged_by_name_and_the_next_is_told(
    make_client, process_receivers, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[str] = []
    client = make_client()
    envelope = send_one(client, "s1")

    def broken(*_: object) -> None:
        raise RuntimeError("a body that must not be logged")

    add_outcome_receiver(OutcomeReceiver("broken", broken))
    add_outcome_receiver(OutcomeReceiver("next", lambda send_id, *_: told.append(send_id)))

    client.outcome_hooks.announce([envelope])

    assert told == ["s1"]
    assert "send s1: the broken hook raised RuntimeError" in caplog.text
    assert "must not be logged" not in caplog.text
