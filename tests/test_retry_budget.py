"""Every try that ends without a settling answer spends one retry budget; retries always end.

In-process drains over real HTTP to the local Mailtrap and a real Redis; the
end-to-end tests prove the same with worker processes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from html import escape

import pytest
from click.testing import CliRunner

import mailqueue
from mailqueue.cli import cli
from mailqueue.client import Client, default
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.dashboard import create_app
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import BrokerUnavailable
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import LocalMailtrap, MemoryTransport, accept_all
from mailqueue.testing.redis_server import RedisServer
from tests.test_dashboard import SECRET, call
from tests.test_reconcile_drain import deliver_until_final, message

MAX_RETRIES = 2


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(logs_delay=0.1) as server:
        yield server


@pytest.fixture
def settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    configured = mailtrap.settings(
        redis_url,
        rate_limit="1000/1s",
        connect_timeout=1.0,
        read_timeout=1.0,
        max_retries=MAX_RETRIES,
        retry_backoff=0.2,
        retry_backoff_max=0.5,
        reconcile_settle=0.2,
    )
    mailqueue.configure(configured)
    return configured


def drain_once(budget: float) -> None:
    """One drain in this process, for the time budget given."""
    drainer = Drainer(default().drain_parts)
    try:
        drainer.drain(budget=budget)
    finally:
        drainer.close()


def dead_letters() -> set[str]:
    return {send_id for send_id, _ in default().outbox.dead_letters()}


# A 500 and a reset leave the outcome unknown: each try is looked up in Email
# Logs, and the look-up finding nothing spends the try as any failure does.
@pytest.mark.parametrize("fault", ["500", "reset", "503"])
def test_every_request_failing_ends_failed_after_the_budget(
    settings: Settings, mailtrap: LocalMailtrap, fault: str
) -> None:
    mailtrap.fault_rates = {fault: 1.0}
    ids = [mailqueue.enqueue(message(i)) for i in range(3)]

    records = deliver_until_final(ids)

    assert {r["state"] for r in records.values()} == {"failed"}
    assert all(r["attempts"] == MAX_RETRIES + 1 for r in records.values())
    assert all(r["error"] and r["error"]["kind"] == "transient" for r in records.values())
    assert dead_letters() == set(ids)
    assert not mailtrap.accepted


def test_a_500_ends_failed_with_its_own_error_and_flagged_as_in_doubt(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailtrap.fault_rates = {"500": 1.0}
    send_id = mailqueue.enqueue(message(1))

    record = deliver_until_final([send_id])[send_id]

    assert record["error"] is not None and record["error"]["status_code"] == 500
    # Its last call may yet be listed later than the look-ups: flagged for
    # ``mailqueue reconcile``.
    assert record["possible_duplicates"] >= 1
    assert send_id in default().store.doubtful_sends()
    # Without coalescing or in-process retries, each try is one request.
    assert mailtrap.stats.by_path["/api/send"] == MAX_RETRIES + 1


def test_a_look_up_that_finds_the_message_settles_it_on_the_last_try(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    # Two tries answered 500 unseen, the last accepted with its answer lost.
    mailtrap.inject("500", MAX_RETRIES)
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))

    record = deliver_until_final([send_id])[send_id]

    assert record["state"] == "sent" and record["reconciled"] == 1
    assert len(mailtrap.accepted) == 1
    assert send_id not in dead_letters()


def test_a_found_message_spends_nothing(settings: Settings, mailtrap: LocalMailtrap) -> None:
    mailtrap.inject("lost")
    send_id = mailqueue.enqueue(message(1))

    record = deliver_until_final([send_id])[send_id]

    assert record["state"] == "sent" and record["attempts"] == 1
    assert len(mailtrap.accepted) == 1


def test_an_outage_that_ends_within_the_budget_sends_once(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailtrap.inject("500", MAX_RETRIES)
    send_id = mailqueue.enqueue(message(1))

    record = deliver_until_final([send_id])[send_id]

    assert record["state"] == "sent" and record["attempts"] == MAX_RETRIES + 1
    assert len(mailtrap.accepted) == 1


def test_a_send_waiting_for_a_look_up_says_so_with_the_tries_it_has_left(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailqueue.configure(settings.replace(reconcile_settle=60.0))
    mailtrap.inject("500")
    send_id = mailqueue.enqueue(message(1))
    drain_once(budget=2)

    record = mailqueue.get_status(send_id)

    assert record is not None and record["state"] == "retrying"
    assert record["waiting_for"] == "look-up"
    assert record["tries_left"] == MAX_RETRIES
    assert record["error"] is not None and record["error"]["status_code"] == 500


def test_a_send_waiting_for_a_retry_says_so_with_the_tries_it_has_left(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailqueue.configure(settings.replace(retry_backoff=60.0, retry_backoff_max=60.0))
    mailtrap.fault_rates = {"503": 1.0}
    send_id = mailqueue.enqueue(message(1))
    drain_once(budget=5)

    record = mailqueue.get_status(send_id)

    assert record is not None and record["state"] == "retrying"
    assert record["waiting_for"] == "retry"
    assert record["tries_left"] == MAX_RETRIES


def test_status_and_the_dashboard_say_a_send_waits_for_a_look_up_and_its_tries_left(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    mailqueue.configure(settings.replace(reconcile_settle=60.0))
    mailtrap.inject("500")
    send_id = mailqueue.enqueue(message(1))
    drain_once(budget=2)

    shown = CliRunner().invoke(cli, ["status", send_id], catch_exceptions=False)
    app = create_app(default(), {"MAILQUEUE_DASHBOARD_SECRET": SECRET})
    page = call(app, "/search?q=" + send_id)[2]

    wait = f"a look-up in Email Logs (Mailtrap's answer was lost); {MAX_RETRIES} tries left"
    assert f"waits for {wait}" in shown.output
    assert escape(wait) in page


def test_an_answer_that_meets_redis_down_is_recorded_once_redis_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis (append-only) is killed while Mailtrap's answer is on its way and
    # comes back a moment later: the worker writes the answer then, rather
    # than forgetting what Mailtrap accepted.
    with RedisServer(appendonly=True) as server:
        settings = Settings(
            broker_url=server.url,
            api_token="t",
            rate_limit=RateLimit.parse("100000/1s"),
            reclaim_idle=30.0,
        )
        client = Client(settings, publish=lambda options: None)
        send_id = client.enqueue(message(1))
        back = threading.Event()

        def accept_while_redis_is_down(call: ApiCall) -> list[RequestResult]:
            server.halt(crash=True)

            def restart() -> None:
                server.start()
                back.set()

            threading.Timer(0.5, restart).start()
            return accept_all(call)

        transport = MemoryTransport(accept_while_redis_is_down)
        try:
            with contextlib.suppress(BrokerUnavailable):
                # Reading the outbox meanwhile fails the drain; the call's record does not.
                Drainer(client.drain_parts, transport).drain(budget=5)
            assert back.wait(10)
            record = client.get_status(send_id)
        finally:
            client.close()

    assert len(transport.calls) == 1
    assert record is not None and record["state"] == "sent"
