"""Volume caps on a real Redis: sliding hourly and daily windows, transactional first."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from mailqueue.client import Client
from mailqueue.core.routing import resolve_route
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import ConfigurationError
from mailqueue.settings import Account, RateLimit, Settings
from mailqueue.store.caps import CapLimiter, Caps
from mailqueue.store.keys import Keys
from mailqueue.testing import MemoryTransport

NOW = 1_900_008_000.0  # on the hour: 527,780 hours since 1970


def limiter(client: redis.Redis, **caps: Any) -> CapLimiter:
    return CapLimiter(client, Keys(), caps=Caps(**caps))


def test_no_cap_takes_everything(redis_client: redis.Redis) -> None:
    assert limiter(redis_client).take("t", "bulk", 10_000, now=NOW) == 0


def test_the_hourly_cap_holds_the_rest_until_its_oldest_minute_leaves(
    redis_client: redis.Redis,
) -> None:
    caps = limiter(redis_client, hourly=10, reserve=0)
    assert caps.take("t", "bulk", 6, now=NOW) == 0
    assert caps.take("t", "bulk", 4, now=NOW + 600) == 0
    assert caps.take("t", "bulk", 1, now=NOW + 700) == pytest.approx(3600 - 700)
    # The first six leave the window an hour after their minute began.
    assert caps.take("t", "bulk", 6, now=NOW + 3600) == 0


def test_the_window_slides_rather_than_resetting_on_the_hour(redis_client: redis.Redis) -> None:
    caps = limiter(redis_client, hourly=10, reserve=0)
    assert caps.take("t", "bulk", 10, now=NOW + 3540) == 0  # the last minute of an hour
    assert caps.take("t", "bulk", 1, now=NOW + 3600) > 0  # the next hour has no room yet


def test_the_daily_cap_counts_across_hours(redis_client: redis.Redis) -> None:
    caps = limiter(redis_client, daily=5, reserve=0)
    for hour in range(5):
        assert caps.take("t", "bulk", 1, now=NOW + hour * 3600) == 0
    assert caps.take("t", "bulk", 1, now=NOW + 5 * 3600) == pytest.approx(19 * 3600)
    assert caps.take("t", "bulk", 1, now=NOW + 24 * 3600) == 0


def test_bulk_leaves_the_reserve_to_transactional_mail(redis_client: redis.Redis) -> None:
    caps = limiter(redis_client, hourly=10, reserve=0.2)
    assert caps.take("t", "bulk", 8, now=NOW) == 0
    assert caps.take("t", "bulk", 1, now=NOW) > 0
    assert caps.take("t", "transactional", 2, now=NOW) == 0
    assert caps.take("t", "transactional", 1, now=NOW) > 0


def test_accounts_count_apart(redis_client: redis.Redis) -> None:
    caps = limiter(redis_client, hourly=1, reserve=0)
    assert caps.take("a", "bulk", 1, now=NOW) == 0
    assert caps.take("b", "bulk", 1, now=NOW) == 0
    assert caps.take("a", "bulk", 1, now=NOW) > 0


def test_a_call_larger_than_the_cap_goes_alone_into_an_empty_window(
    redis_client: redis.Redis,
) -> None:
    caps = limiter(redis_client, hourly=10, reserve=0)
    assert caps.take("t", "bulk", 500, now=NOW) == 0
    assert caps.take("t", "bulk", 1, now=NOW) > 0


def test_room_is_what_the_tighter_window_has_left_for_the_lane(redis_client: redis.Redis) -> None:
    caps = limiter(redis_client, hourly=10, daily=100, reserve=0.2)
    assert caps.room("t", "transactional", now=NOW) == (10, 3600)
    assert caps.take("t", "transactional", 6, now=NOW + 60) == 0
    assert caps.room("t", "transactional", now=NOW + 120) == (4, 3600 - 60)
    assert caps.room("t", "bulk", now=NOW + 120)[0] == 2  # the reserve is not bulk's


def test_room_takes_nothing(redis_client: redis.Redis) -> None:
    caps = limiter(redis_client, hourly=10, reserve=0)
    caps.room("t", "bulk", now=NOW)
    assert caps.take("t", "bulk", 10, now=NOW) == 0


def test_without_caps_there_is_room_for_anything(redis_client: redis.Redis) -> None:
    assert limiter(redis_client).room("t", "bulk", now=NOW) == (None, 0.0)


# -- held by the drain ---------------------------------------------------------


@pytest.fixture
def capped(redis_url: str) -> Iterator[Client]:
    wakeups: queue.Queue[dict[str, Any]] = queue.Queue()
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        coalesce=False,
        hourly_cap=10,
        cap_transactional_reserve=0.2,
    )
    client = Client(settings, publish=wakeups.put)
    yield client
    client.close()


def message(index: int) -> dict[str, Any]:
    return {
        "from_email": "news@example.com",
        "to": [f"reader{index}@example.com"],
        "subject": "News",
        "text": "Hello",
    }


def test_a_capped_campaign_waits_in_the_queue_and_transactional_mail_still_goes(
    capped: Client,
) -> None:
    ids = capped.enqueue_many([message(i) for i in range(12)], campaign="spring")
    transport = MemoryTransport()
    Drainer(capped.drain_parts, transport=transport).drain(budget=5)
    assert len(transport.calls) == 8  # the cap less the transactional reserve
    held = [capped.get_status(i) for i in ids if capped.store.state(i) != "sent"]
    assert len(held) == 4
    assert {r["state"] for r in held if r} == {"queued"}
    record = capped.get_campaign("spring")
    assert record is not None and record["counts"] == {"sent": 8, "waiting": 4}

    reset = capped.enqueue({**message(100), "to": ["alice@example.com"]})
    Drainer(capped.drain_parts, transport=transport).drain(budget=5)
    assert capped.store.state(reset) == "sent"
    assert len(transport.calls) == 9


# -- an account's own caps -----------------------------------------------------


def test_an_account_reads_its_caps_from_the_environment_and_from_django() -> None:
    from_env = Settings.from_env(
        {
            "MAILTRAP_API_TOKEN": "top-tok",
            "MAILQUEUE_HOURLY_CAP": "1000",
            "MAILQUEUE_ACCOUNTS": "eu",
            "MAILQUEUE_ACCOUNT_EU_API_TOKEN": "eu-tok",
            "MAILQUEUE_ACCOUNT_EU_HOURLY_CAP": "150",
            "MAILQUEUE_ACCOUNT_EU_DAILY_CAP": "1500",
        }
    )
    route = resolve_route(from_env, account="eu")
    assert (route.hourly_cap, route.daily_cap) == (150, 1500)
    top = resolve_route(from_env)
    assert (top.hourly_cap, top.daily_cap) == (1000, None)

    django = SimpleNamespace(MAILQUEUE_ACCOUNTS={"eu": {"API_TOKEN": "t", "DAILY_CAP": 200}})
    eu = resolve_route(Settings.from_django(django, environ={}), account="eu")
    assert (eu.hourly_cap, eu.daily_cap) == (None, 200)


@pytest.mark.parametrize("value", ["many", "-1"])
def test_a_bad_account_cap_is_refused_naming_the_account(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"'eu'.*hourly_cap"):
        Settings.from_env(
            {
                "MAILQUEUE_ACCOUNTS": "eu",
                "MAILQUEUE_ACCOUNT_EU_API_TOKEN": "t",
                "MAILQUEUE_ACCOUNT_EU_HOURLY_CAP": value,
            }
        )


def test_an_account_cap_holds_that_accounts_mail_only(redis_url: str) -> None:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        coalesce=False,
        accounts={"eu": Account(name="eu", api_token="eu-tok", hourly_cap=2)},
    )
    client = Client(settings, publish=lambda options: None)
    try:
        capped = [client.enqueue({**message(i), "account": "eu"}) for i in range(4)]
        free = [client.enqueue(message(10 + i)) for i in range(4)]
        Drainer(client.drain_parts, transport=MemoryTransport()).drain(budget=5)
        assert [client.store.state(i) for i in free] == ["sent"] * 4
        assert sorted(str(client.store.state(i)) for i in capped) == [
            "queued",
            "queued",
            "sent",
            "sent",
        ]
    finally:
        client.close()


def test_a_coalesced_call_carries_no_more_than_the_caps_have_left(redis_url: str) -> None:
    settings = Settings(
        broker_url=redis_url,
        api_token="t",
        rate_limit=RateLimit.parse("100000/1s"),
        coalesce=True,
        hourly_cap=50,
    )
    client = Client(settings, publish=lambda options: None)
    try:
        ids = [client.enqueue(message(i)) for i in range(80)]
        transport = MemoryTransport()
        Drainer(client.drain_parts, transport=transport).drain(budget=5)
        sent = sum(len(call.json.get("requests", [None])) for call in transport.calls)
        assert sent == 50
        held = [client.get_status(i) for i in ids if client.store.state(i) != "sent"]
        assert len(held) == 30
        assert all(r and r["state"] == "queued" and r.get("next_attempt_at") for r in held)
    finally:
        client.close()
