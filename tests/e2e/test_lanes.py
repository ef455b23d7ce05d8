"""Routing and lanes with real workers: where mail goes is the workers' decision, and
transactional mail never waits behind campaigns."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

from .helpers import killed_at_exit, wait_final

pytestmark = pytest.mark.e2e

TEMPLATE = "7f1b6a36-0000-4000-8000-00000000c0de"


def message(subject: str, to: str = "alice@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [to],
        "subject": subject,
        "text": "Hello",
        **extra,
    }


def accepted_by_subject(mailtrap: LocalMailtrap) -> dict[str, list[tuple[str, str | None]]]:
    seen: dict[str, list[tuple[str, str | None]]] = {}
    for accepted in mailtrap.accepted:
        seen.setdefault(accepted.payload["subject"], []).append(
            (accepted.stream, accepted.inbox_id)
        )
    return seen


def producer_without_mailtrap_settings(redis_url: str) -> None:
    mailqueue.configure(Settings(broker_url=redis_url))


def test_campaign_mail_reaches_the_bulk_url_and_transactional_mail_the_transactional_url(
    settings: Settings, mailtrap: LocalMailtrap, worker: WorkerProcess
) -> None:
    lone = mailqueue.enqueue(message("reset"))
    lone_bulk = mailqueue.enqueue(message("newsletter", stream="bulk"))
    campaign = mailqueue.enqueue_many(
        [message(f"promo {i}", to=f"c{i}@example.com", stream="bulk") for i in range(20)]
    )
    invoices = mailqueue.enqueue_many(
        [message(f"invoice {i}", to=f"c{i}@example.com") for i in range(5)]
    )

    records = wait_final([lone, lone_bulk, *campaign, *invoices])

    assert {record["state"] for record in records.values()} == {"sent"}
    seen = accepted_by_subject(mailtrap)
    assert seen["reset"] == [("transactional", None)]
    assert seen["newsletter"] == [("bulk", None)]
    assert all(seen[f"promo {i}"] == [("bulk", None)] for i in range(20))
    # A campaign on the transactional stream stays on it: lanes are not streams.
    assert all(seen[f"invoice {i}"] == [("transactional", None)] for i in range(5))


def test_a_workers_sandbox_id_is_honoured_for_mail_from_a_producer_with_no_mailtrap_setting(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, redis_url: str
) -> None:
    worker_settings = make_settings(sandbox_id="4242")
    producer_without_mailtrap_settings(redis_url)

    with killed_at_exit(WorkerProcess(worker_settings, concurrency=2)):
        ids = [
            mailqueue.enqueue(message("transactional")),
            mailqueue.enqueue(message("bulk", stream="bulk")),
            *mailqueue.enqueue_many([message("campaign", stream="bulk")]),
        ]
        records = wait_final(ids)

    assert {record["state"] for record in records.values()} == {"sent"}
    seen = accepted_by_subject(mailtrap)
    for subject in ("transactional", "bulk", "campaign"):
        assert seen[subject] == [("sandbox", "4242")]


def test_a_settings_change_on_the_workers_applies_to_mail_already_queued(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, redis_url: str
) -> None:
    old = make_settings()
    with WorkerProcess(old, concurrency=1):
        first = mailqueue.enqueue(message("before"))
        wait_final([first])
    producer_without_mailtrap_settings(redis_url)
    # Queued while no worker runs; the workers then restart with a sandbox and
    # another bulk token.
    queued = [
        mailqueue.enqueue(message("queued transactional")),
        mailqueue.enqueue(message("queued bulk", stream="bulk")),
    ]
    mailtrap.extra_tokens = ("bulk-token",)
    new = old.replace(bulk_api_token="bulk-token")
    with killed_at_exit(WorkerProcess(new, concurrency=1)):
        records = wait_final(queued)

    assert {record["state"] for record in records.values()} == {"sent"}
    by_subject = {m.payload["subject"]: m for m in mailtrap.accepted}
    assert by_subject["before"].stream == "transactional"
    assert by_subject["queued transactional"].token == mailtrap.token
    assert (by_subject["queued bulk"].stream, by_subject["queued bulk"].token) == (
        "bulk",
        "bulk-token",
    )


def test_mail_queued_for_a_sandbox_reaches_the_sandbox_after_the_workers_get_one(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, redis_url: str
) -> None:
    sandboxed = make_settings(sandbox_id="99")
    producer_without_mailtrap_settings(redis_url)
    queued = mailqueue.enqueue(message("staging"))

    with killed_at_exit(WorkerProcess(sandboxed, concurrency=1)):
        wait_final([queued])

    assert accepted_by_subject(mailtrap)["staging"] == [("sandbox", "99")]


def test_each_account_sends_with_its_own_token(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap
) -> None:
    mailtrap.extra_tokens = ("eu-token", "eu-bulk-token")
    settings = make_settings(
        accounts={"eu": {"api_token": "eu-token", "bulk_api_token": "eu-bulk-token"}}
    )

    with killed_at_exit(WorkerProcess(settings, concurrency=1)):
        ids = [
            mailqueue.enqueue(message("default")),
            mailqueue.enqueue(message("eu", account="eu")),
            mailqueue.enqueue(message("eu bulk", account="eu", stream="bulk")),
        ]
        records = wait_final(ids)

    assert {record["state"] for record in records.values()} == {"sent"}
    tokens = {m.payload["subject"]: (m.stream, m.token) for m in mailtrap.accepted}
    assert tokens == {
        "default": ("transactional", mailtrap.token),
        "eu": ("transactional", "eu-token"),
        "eu bulk": ("bulk", "eu-bulk-token"),
    }


def test_mail_for_an_account_the_workers_lack_waits_for_their_settings(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap, redis_url: str
) -> None:
    without = make_settings(retry_backoff=0.2, retry_backoff_max=0.5)
    producer_without_mailtrap_settings(redis_url)
    send_id = mailqueue.enqueue(message("for eu", account="eu"))

    with WorkerProcess(without, concurrency=1):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            record: Mapping[str, Any] = mailqueue.get_status(send_id) or {}
            if record.get("state") == "retrying":
                break
            time.sleep(0.05)
    assert record["state"] == "retrying"
    assert "eu" in record["error"]["message"]
    assert mailtrap.accepted == []

    mailtrap.extra_tokens = ("eu-token",)
    with killed_at_exit(WorkerProcess(without.replace(accounts={"eu": {"api_token": "eu-token"}}))):
        wait_final([send_id])
    assert [m.token for m in mailtrap.accepted] == ["eu-token"]


# -- lanes ------------------------------------------------------------------------------


def test_a_transactional_send_does_not_wait_for_a_bulk_campaign_to_finish(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap
) -> None:
    # Slow enough that the campaign lasts several seconds: 40 calls at 10 per second.
    settings = make_settings(rate_limit="10/1s", coalesce=False)
    campaign = mailqueue.enqueue_many(
        [message(f"promo {i}", to=f"c{i}@example.com", stream="bulk") for i in range(40)]
    )
    with killed_at_exit(WorkerProcess(settings, concurrency=1)):
        deadline = time.monotonic() + 30
        while len(mailtrap.accepted) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(mailtrap.accepted) < 40, "the campaign must still be running"
        reset = mailqueue.enqueue(message("password reset"))
        wait_final([reset, *campaign], timeout=60)

    order = [m.payload["subject"] for m in mailtrap.accepted]
    # It went out among the first calls after it was queued, not after the campaign.
    assert order.index("password reset") < 15


def test_a_small_campaign_is_not_held_behind_a_big_one(
    make_settings: Callable[..., Settings], mailtrap: LocalMailtrap
) -> None:
    settings = make_settings(rate_limit="10/1s", coalesce=False)
    big = mailqueue.enqueue_many(
        [message(f"big {i}", to=f"b{i}@example.com", stream="bulk") for i in range(40)]
    )
    small = mailqueue.enqueue_many(
        [message(f"small {i}", to=f"s{i}@example.com", stream="bulk") for i in range(3)]
    )
    with killed_at_exit(WorkerProcess(settings, concurrency=1)):
        wait_final([*big, *small], timeout=60)

    order = [m.payload["subject"] for m in mailtrap.accepted]
    last_small = max(order.index(f"small {i}") for i in range(3))
    # Campaigns take turns: the small one is done long before the big one.
    assert last_small < 20
