"""mailqueue.testing.MemoryTransport: a drainer's calls answered in memory, recorded in order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailqueue.client import Client
from mailqueue.core.payload import ApiCall, build_payload
from mailqueue.core.responses import RequestResult
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import DeliveryError, TransientDeliveryError
from mailqueue.mailtrap.transport import Withdrawn
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import MemoryTransport, accept_all

MESSAGE = {"from_email": "shop@example.com", "to": ["a@example.com"], "subject": "Hi", "text": "Hi"}


def a_call() -> ApiCall:
    (call,) = build_payload(MESSAGE, Settings(api_token="t"))
    return call


def unavailable(call: ApiCall) -> list[RequestResult]:
    raise TransientDeliveryError("unavailable", status_code=503, path=call.path)


def test_accept_all_gives_every_recipient_its_own_message_id() -> None:
    call = a_call()

    (result,) = accept_all(call)

    assert list(result.message_ids) == ["a@example.com"]
    assert result.error is None and result.message_ids["a@example.com"]


def test_each_call_is_recorded_and_answered_by_the_handler() -> None:
    answer = [RequestResult({"a@example.com": "m-1"})]
    transport = MemoryTransport(lambda call: answer)

    assert transport.send(a_call()) == answer
    assert transport.paths() == ["send"]


def test_an_error_is_shown_to_on_error_and_raised() -> None:
    seen: list[DeliveryError] = []
    transport = MemoryTransport(unavailable)

    with pytest.raises(TransientDeliveryError):
        transport.send(a_call(), on_error=seen.append)

    assert [error.status_code for error in seen] == [503]
    assert len(transport.calls) == 1


def test_a_call_proceed_turns_down_is_withdrawn_and_not_recorded() -> None:
    transport = MemoryTransport()

    with pytest.raises(Withdrawn):
        transport.send(a_call(), proceed=lambda: False)

    assert transport.calls == []


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    settings = Settings(broker_url=redis_url, api_token="t", rate_limit=RateLimit(100000, 1.0))
    client = Client(settings, publish=lambda options: None)
    yield client
    client.close()


def test_a_drainer_sends_through_it_and_closes_it(client: Client) -> None:
    # The example of the README's testing section.
    send_id = client.enqueue(MESSAGE)
    transport = MemoryTransport(accept_all)
    drainer = Drainer(client.drain_parts, transport)

    drainer.drain(budget=5)
    drainer.close()

    assert transport.paths() == ["send"]
    assert client.store.state(send_id) == "sent"
    assert transport.closed
