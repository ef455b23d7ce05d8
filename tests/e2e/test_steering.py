"""Campaigns steered while real workers send: pause, resume, cancel, suppressions, send_at."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

import mailqueue
from mailqueue.client import default as current
from mailqueue.settings import Settings
from mailqueue.store.campaigns import CampaignRecord
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.polling import wait_for
from mailqueue.testing.worker import WorkerProcess
from mailqueue.testing.wsgi import serving
from mailqueue.webhooks import create_app

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e

SECRET = "whsec-e2e-steering-0123456789ab"
# Slow enough that a campaign is still going when it is steered: one call per
# message (no coalescing), 40 calls a second.
STEERED = {"coalesce": False, "rate_limit": "40/1s"}
# "A pause holds fleet-wide within 2 seconds."
PAUSE_HOLDS_WITHIN = 2.0


def newsletter(index: int, **extra: Any) -> dict[str, Any]:
    return {
        "from_email": "News <news@example.com>",
        "to": [f"reader{index}@example.com"],
        "subject": "Issue 42",
        "text": "This week's news.",
        **extra,
    }


def campaign(name: str) -> CampaignRecord:
    record = mailqueue.get_campaign(name)
    assert record is not None
    return record


def accepted_for(mailtrap: LocalMailtrap, prefix: str = "reader") -> list[str]:
    return [r for m in list(mailtrap.accepted) for r in m.recipients if r.startswith(prefix)]


@pytest.fixture
def steered(make_settings: Callable[..., Settings]) -> Iterator[WorkerProcess]:
    settings = make_settings(**STEERED)
    with WorkerProcess(settings, concurrency=2) as process:
        yield process
        process.kill()  # no warm shutdown needed once the test is over


def test_a_paused_campaign_sends_nothing_more_then_resumes_to_the_end(
    mailtrap: LocalMailtrap, steered: WorkerProcess
) -> None:
    ids = mailqueue.enqueue_many([newsletter(i) for i in range(200)], campaign="spring")
    wait_for(lambda: len(mailtrap.accepted) >= 20, 30, "the campaign started")

    record = mailqueue.pause_campaign("spring")
    assert record["state"] == "paused"
    # The contract's window: calls already under way may still finish in it.
    time.sleep(PAUSE_HOLDS_WITHIN)
    held_at = len(mailtrap.accepted)
    assert held_at < 200
    time.sleep(2.0)  # a window in which nothing new may arrive
    assert len(mailtrap.accepted) == held_at
    wait_for(
        lambda: campaign("spring")["counts"] == {"sent": held_at, "waiting": 200 - held_at},
        10,
        "the campaign counts what reached the stand-in",
    )

    assert mailqueue.resume_campaign("spring")["state"] == "running"
    records = wait_final(ids, timeout=60)
    assert {r["state"] for r in records.values()} == {"sent"}
    final = campaign("spring")
    assert (final["state"], final["counts"]) == ("finished", {"sent": 200, "waiting": 0})
    assert sorted(accepted_for(mailtrap)) == sorted(f"reader{i}@example.com" for i in range(200))


def test_a_cancelled_campaign_counts_exactly_what_was_sent_and_cancelled(
    mailtrap: LocalMailtrap, steered: WorkerProcess
) -> None:
    ids = mailqueue.enqueue_many([newsletter(i) for i in range(200)], campaign="autumn")
    wait_for(lambda: len(mailtrap.accepted) >= 20, 30, "the campaign started")

    assert mailqueue.cancel_campaign("autumn")["state"] == "cancelled"
    records = wait_final(ids, timeout=60)
    sent = accepted_for(mailtrap)
    assert len(sent) == len(set(sent)), "a recipient was sent twice"
    assert 20 <= len(sent) < 200
    final = campaign("autumn")
    assert final["state"] == "cancelled"
    assert final["counts"] == {"sent": len(sent), "cancelled": 200 - len(sent), "waiting": 0}
    states = [r["state"] for r in records.values()]
    assert states.count("sent") == len(sent)
    assert states.count("cancelled") == 200 - len(sent)
    with pytest.raises(mailqueue.ValidationError):
        mailqueue.resume_campaign("autumn")


@pytest.fixture
def webhook_url(settings: Settings) -> Iterator[str]:
    with serving(create_app(settings.replace(tracking_secret=SECRET))) as base_url:
        yield base_url + "/mailtrap/tracking/"


def post_events(url: str, events: list[dict[str, object]]) -> None:
    body = json.dumps({"events": events}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = requests.post(url, data=body, headers={"Mailtrap-Signature": signature}, timeout=5)
    assert answer.status_code == 200


def test_a_hard_bounce_suppresses_the_address_until_unsuppressed(
    mailtrap: LocalMailtrap, worker: WorkerProcess, webhook_url: str
) -> None:
    first = mailqueue.enqueue({**newsletter(0), "to": ["alice@example.com"]})
    message_id = wait_final([first])[first]["recipients"]["alice@example.com"]["message_id"]
    post_events(
        webhook_url,
        [
            {
                "event": "bounce",
                "message_id": message_id,
                "email": "alice@example.com",
                "event_id": "evt-bounce-1",
                "timestamp": int(time.time()),
                "bounce_category": "badrecipient",
            }
        ],
    )
    suppression = mailqueue.get_suppression("ALICE@example.com")
    assert suppression is not None and suppression["reason"] == "hard_bounce"

    mailtrap.reset()
    second = mailqueue.enqueue({**newsletter(0), "to": ["alice@example.com", "bob@example.com"]})
    record = wait_final([second])[second]
    assert [m.recipients for m in mailtrap.accepted] == [("bob@example.com",)]
    assert record["recipients"]["alice@example.com"]["status"] == "suppressed"

    alone = mailqueue.enqueue({**newsletter(0), "to": ["alice@example.com"]})
    record = wait_final([alone])[alone]
    assert (record["state"], record["error"]["kind"]) == ("failed", "suppressed")

    assert mailqueue.unsuppress("alice@example.com") is True
    third = mailqueue.enqueue({**newsletter(0), "to": ["alice@example.com"]})
    wait_final([third])
    assert ("alice@example.com",) in [m.recipients for m in mailtrap.accepted]


def test_send_at_holds_a_message_until_its_second(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    send_at = time.time() + 3
    send_id = mailqueue.enqueue({**newsletter(0), "send_at": send_at})
    assert mailqueue.get_status(send_id)["state"] == "queued"  # type: ignore[index]
    record = wait_final([send_id], timeout=30)[send_id]
    sent_at = datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00")).timestamp()
    # Never early; how soon after is up to the machine, the wait above bounds it.
    assert sent_at >= send_at
    assert len(mailtrap.accepted) == 1


def test_a_cancelled_or_rescheduled_send_is_not_sent_at_its_old_time(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    cancelled = mailqueue.enqueue({**newsletter(0), "send_at": time.time() + 2})
    moved = mailqueue.enqueue({**newsletter(1), "send_at": time.time() + 2})
    assert mailqueue.cancel(cancelled)["state"] == "cancelled"
    mailqueue.reschedule(moved, time.time() + 3600)
    control = mailqueue.enqueue({**newsletter(2), "send_at": time.time() + 2.5})
    wait_final([control], timeout=30)
    assert accepted_for(mailtrap) == ["reader2@example.com"]
    assert mailqueue.get_status(moved)["state"] == "queued"  # type: ignore[index]


def test_a_send_held_past_its_expiry_ends_expired(
    mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    first = mailqueue.enqueue({**newsletter(0, campaign="winter"), "send_at": time.time() + 3600})
    mailqueue.pause_campaign("winter")
    expires_at = time.time() + 1
    held = mailqueue.enqueue({**newsletter(1, campaign="winter"), "expires_at": expires_at})
    client = current()
    held_key = client.keys.campaign_held("winter")
    wait_for(lambda: client.redis.llen(held_key) == 1, 10, "a worker held it")
    wait_for(lambda: time.time() > expires_at, 5, "its expiry passed while paused")
    mailqueue.resume_campaign("winter")
    record = wait_final([held], timeout=30)[held]
    assert record["state"] == "expired"
    assert record["recipients"]["reader1@example.com"]["status"] == "expired"
    assert mailqueue.get_status(first)["state"] == "queued"  # type: ignore[index]
    assert mailtrap.accepted == []


def test_the_hourly_cap_holds_bulk_mail_and_leaves_transactional_its_reserve(
    mailtrap: LocalMailtrap, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(hourly_cap=10, cap_transactional_reserve=0.2, coalesce=False)
    with killed_at_exit(WorkerProcess(settings, concurrency=2)):
        ids = mailqueue.enqueue_many([newsletter(i) for i in range(15)], campaign="capped")
        wait_for(lambda: len(mailtrap.accepted) >= 8, 30, "the campaign used its share")
        wait_for(lambda: campaign("capped")["counts"].get("sent") == 8, 10, "recorded")
        time.sleep(2.0)  # a window in which nothing more may arrive
        assert len(mailtrap.accepted) == 8
        assert sum(mailqueue.get_status(i)["state"] == "queued" for i in ids) == 7  # type: ignore[index]

        resets = [
            mailqueue.enqueue({**newsletter(0), "to": [f"user{i}@example.com"]}) for i in range(3)
        ]
        wait_for(lambda: len(mailtrap.accepted) >= 10, 30, "transactional mail used the reserve")
        wait_for(
            lambda: (
                sorted(mailqueue.get_status(i)["state"] for i in resets)  # type: ignore[index]
                == ["queued", "sent", "sent"]
            ),
            10,
            "two resets sent, the third held by the cap itself",
        )
        time.sleep(2.0)
        assert len(mailtrap.accepted) == 10


def test_lanes_count_a_paused_campaigns_parts_as_paused_while_it_is_paused(
    mailtrap: LocalMailtrap, steered: WorkerProcess
) -> None:
    mailqueue.enqueue_many([newsletter(i) for i in range(200)], campaign="spring")
    wait_for(lambda: len(mailtrap.accepted) >= 20, 30, "the campaign started")

    mailqueue.pause_campaign("spring")
    client = current()

    def bulk() -> Any:
        stats = client.lane_stats()
        (lane,) = [s for s in stats if (s.lane, s.stream) == ("bulk", "transactional")]
        return lane

    # Every part not handed over is counted paused, none waiting or in flight with an age.
    wait_for(
        lambda: bulk().paused == campaign("spring")["counts"].get("waiting", 0) > 0,
        10,
        "the unsent parts counted as paused",
    )
    lane = bulk()
    assert (lane.waiting, lane.in_flight, lane.oldest_seconds) == (0, 0, 0.0)

    mailqueue.resume_campaign("spring")
    wait_for(lambda: bulk().paused == 0, 10, "nothing paused once resumed")
