"""A drain that loses an answer looks the call up in Email Logs before sending again.

In-process drains over real HTTP to the local Mailtrap and a real Redis; the
end-to-end tests prove the same with worker processes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

import mailqueue
from mailqueue.client import default
from mailqueue.core.routing import resolve_route
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap

FINAL = {"sent", "partially_sent", "failed"}


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(logs_delay=0.1) as server:
        server.slow_seconds = 1.5
        yield server


@pytest.fixture
def settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    configured = mailtrap.settings(
        redis_url,
        rate_limit="1000/1s",
        connect_timeout=1.0,
        read_timeout=1.0,
        retry_backoff=0.2,
        retry_backoff_max=0.5,
        reconcile_settle=0.3,
    )
    mailqueue.configure(configured)
    return configured


def message(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "from_email": "shop@example.com",
        "to": [f"r{i}@example.com"],
        "subject": f"m{i}",
        "text": "x",
        **extra,
    }


def deliver_until_final(send_ids: list[str], timeout: float = 60.0) -> dict[str, Mapping[str, Any]]:
    """Drain in this process until every send is final; returns the records."""
    drainer = Drainer(default().drain_parts)
    deadline = time.monotonic() + timeout
    try:
        while True:
            drainer.drain(budget=2)
            records: dict[str, Mapping[str, Any]] = {
                sid: mailqueue.get_status(sid) or {} for sid in send_ids
            }
            if all(r.get("state") in FINAL for r in records.values()):
                return records
            assert time.monotonic() < deadline, {s: r.get("state") for s, r in records.items()}
            time.sleep(0.05)
    finally:
        drainer.close()


def copies(mailtrap: LocalMailtrap) -> Counter[str]:
    return Counter(m.payload["subject"] for m in mailtrap.accepted)


def sample(outcome: str) -> float:
    return REGISTRY.get_sample_value("mailqueue_reconcile_total", {"outcome": outcome}) or 0.0


# Mailtrap accepted the call; its answer was lost (a reset, past the read
# timeout) or unreadable (a 500, an HTML page) on its way back.
@pytest.mark.parametrize("fault", ["lost", "slow", "accepted-500", "accepted-nonjson"])
def test_an_answer_lost_after_mailtrap_accepted_sends_nothing_twice(
    settings: Settings, mailtrap: LocalMailtrap, fault: str
) -> None:
    found_before = sample("found")
    mailtrap.inject(fault)
    send_id = mailqueue.enqueue(message(1))
    record = deliver_until_final([send_id])[send_id]
    assert copies(mailtrap) == {"m1": 1}
    assert record["state"] == "sent"
    assert record["reconciled"] == 1 and record["possible_duplicates"] == 0
    (accepted,) = mailtrap.accepted
    assert record["recipients"]["r1@example.com"]["message_id"] == accepted.message_ids[0]
    assert sample("found") == found_before + 1


def test_a_coalesced_call_whose_answer_was_lost_is_found_whole(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailtrap.inject("lost")
    ids = [mailqueue.enqueue(message(i)) for i in range(20)]
    records = deliver_until_final(ids)
    assert copies(mailtrap) == {f"m{i}": 1 for i in range(20)}
    assert {r["state"] for r in records.values()} == {"sent"}
    assert sum(r["reconciled"] for r in records.values()) == 20


def test_a_call_mailtrap_never_accepted_is_looked_up_twice_then_sent(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    # A window long enough that no slot taken in this test leaves it.
    mailqueue.configure(settings.replace(rate_limit="1000/60s"))
    mailtrap.inject("500")
    send_id = mailqueue.enqueue(message(1))
    record = deliver_until_final([send_id])[send_id]
    assert copies(mailtrap) == {"m1": 1}
    assert record["state"] == "sent" and record["reconciled"] == 0
    looked = mailtrap.email_logs.requests["list"]
    assert looked >= 2
    # Each look-up took a slot of the fleet-wide Email Logs window in Redis,
    # and one of the token's sending window, beside the two calls it made.
    client = default()
    token_key = resolve_route(settings).limiter_key
    assert client.redis.zcard(client.keys.rate_limit(f"logs-list-{token_key}")) == looked
    assert client.redis.zcard(client.keys.rate_limit(token_key)) == looked + 2


def test_a_503_is_retried_without_a_look_up(settings: Settings, mailtrap: LocalMailtrap) -> None:
    mailtrap.inject("503")
    send_id = mailqueue.enqueue(message(1))
    record = deliver_until_final([send_id])[send_id]
    assert copies(mailtrap) == {"m1": 1}
    assert record["state"] == "sent" and record["possible_duplicates"] == 0
    assert mailtrap.email_logs.requests["list"] == 0


def test_logs_slower_than_the_settle_delay_give_a_counted_resend(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailtrap.email_logs.delay = 3600
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))
    record = deliver_until_final([send_id])[send_id]
    assert copies(mailtrap) == {"m1": 2}
    assert record["state"] == "sent"
    assert record["possible_duplicates"] == 1 and record["reconciled"] == 0


def test_a_429_from_the_logs_puts_the_look_up_off_and_is_never_taken_for_absent(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    # The fleet cools down one window (2 s) after a 429, longer than a
    # look-up may wait here (reclaim_idle 3 s leaves it 1 s): it is put off.
    mailqueue.configure(settings.replace(email_logs_rate_limit="60/2s", reclaim_idle=3.0))
    busy_before = sample("busy")
    mailtrap.email_logs.list_limit = (0, 3600.0)  # every list request answers 429
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))
    drainer = Drainer(default().drain_parts)
    deadline = time.monotonic() + 30
    try:
        while sample("busy") == busy_before:
            assert time.monotonic() < deadline, "no look-up met the logs API's limit"
            drainer.drain(budget=2)
            time.sleep(0.05)
    finally:
        drainer.close()
    assert mailtrap.email_logs.requests["list"] >= 1
    assert len(mailtrap.accepted) == 1  # nothing sent again while the logs said nothing
    record = mailqueue.get_status(send_id)
    assert record is not None and record["state"] == "retrying"
    mailtrap.email_logs.list_limit = None
    final = deliver_until_final([send_id])[send_id]
    assert copies(mailtrap) == {"m1": 1}
    assert final["reconciled"] == 1 and final["possible_duplicates"] == 0


def test_logs_that_cannot_answer_fall_back_to_sending_again_counted(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    fallbacks_before = sample("fallback")
    mailtrap.email_logs.failure = 401
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))
    record = deliver_until_final([send_id])[send_id]
    assert copies(mailtrap) == {"m1": 2}
    assert record["possible_duplicates"] == 1 and record["reconcile_fallbacks"] == 1
    assert sample("fallback") == fallbacks_before + 1


def test_every_message_carries_its_tag_on_the_wire(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    send_id = mailqueue.enqueue(message(1, metadata={"order": "7"}))
    deliver_until_final([send_id])
    (accepted,) = mailtrap.accepted
    assert accepted.payload["custom_variables"] == {"order": "7", "mq_tag": f"{send_id}.0.0.0"}


def test_without_reconciling_nothing_is_tagged_or_looked_up(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailqueue.configure(settings.replace(reconcile=False))
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))
    record = deliver_until_final([send_id])[send_id]
    assert "custom_variables" not in mailtrap.accepted[0].payload
    assert mailtrap.email_logs.requests == {"list": 0, "get": 0}
    assert record["possible_duplicates"] >= 1


def test_a_campaign_part_found_in_the_logs_counts_as_sent_in_its_campaign(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailtrap.inject("lost")
    ids = list(mailqueue.enqueue_many([message(i) for i in range(3)], campaign="spring"))
    records = deliver_until_final(ids)
    assert copies(mailtrap) == {f"m{i}": 1 for i in range(3)}
    assert sum(r["reconciled"] for r in records.values()) == 3
    campaign = mailqueue.get_campaign("spring")
    assert campaign is not None and campaign["counts"].get("sent") == 3
