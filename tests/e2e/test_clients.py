"""Two clients with different settings in one process: each delivers through its own parts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import mailqueue
from mailqueue import client as client_module
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import LocalMailtrap, RedisServer
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit

pytestmark = pytest.mark.e2e

FINAL = {"sent", "partially_sent", "failed"}


def message(shop: str, index: int) -> dict[str, object]:
    return {
        "from_email": f"{shop} <{shop}@example.com>",
        "to": [f"customer{index}@example.com"],
        "subject": f"{shop} order {index}",
        "text": "It ships today.",
    }


def settings_for(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    return Settings(
        api_token=mailtrap.token,
        api_url=mailtrap.url,
        bulk_api_url=mailtrap.bulk_url,
        broker_url=redis_url,
        connect_timeout=2.0,
        read_timeout=2.0,
        reclaim_idle=10.0,
        visibility_timeout=15.0,
        rate_limit=RateLimit.parse("1000/1s"),
    )


def wait_sent(client: mailqueue.Client, send_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [client.store.state(send_id) for send_id in send_ids]
        if all(state in FINAL for state in states):
            assert states == ["sent"] * len(send_ids)
            return
        time.sleep(0.05)
    raise AssertionError(f"not final after {timeout} s: {states}")


@pytest.fixture
def second_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_two_clients_deliver_each_to_their_own_redis_and_api(
    redis_url: str, second_redis: RedisServer
) -> None:
    default_before = client_module._default
    with (
        LocalMailtrap(token="token-of-shop-a") as api_a,
        LocalMailtrap(token="token-of-shop-b") as api_b,
    ):
        settings_a = settings_for(redis_url, api_a)
        settings_b = settings_for(second_redis.url, api_b)
        shop_a, shop_b = mailqueue.Client(settings_a), mailqueue.Client(settings_b)
        with (
            killed_at_exit(WorkerProcess(settings_a, concurrency=1)),
            killed_at_exit(WorkerProcess(settings_b, concurrency=1)),
        ):
            ids_a = [shop_a.enqueue(message("a", i)) for i in range(3)]
            ids_b = shop_b.enqueue_many([message("b", i) for i in range(4)])

            wait_sent(shop_a, ids_a)
            wait_sent(shop_b, ids_b)

        assert sorted(m.payload["subject"] for m in api_a.accepted) == [
            f"a order {i}" for i in range(3)
        ]
        assert sorted(m.payload["subject"] for m in api_b.accepted) == [
            f"b order {i}" for i in range(4)
        ]
        # Each client's records live in its own Redis only.
        assert all(shop_b.get_status(send_id) is None for send_id in ids_a)
        assert all(shop_a.get_status(send_id) is None for send_id in ids_b)
        shop_a.close()
        shop_b.close()
    assert client_module._default is default_before


def test_creating_a_client_does_no_io() -> None:
    unreachable = Settings(broker_url="redis://127.0.0.1:1/0", rate_limit=RateLimit.parse("1/s"))

    client = mailqueue.Client(unreachable)

    assert client.settings is unreachable
    with pytest.raises(mailqueue.BrokerUnavailable):
        client.get_status("some-id")
