"""Reduced crash scenarios (tests/crash.py): every message ends sent, or failed with a reason."""

from __future__ import annotations

import pytest

from tests.crash import (
    CrashReport,
    scenario_api_down,
    scenario_broker_down,
    scenario_kill,
    scenario_redis_restart,
)

pytestmark = pytest.mark.e2e


def _assert_recovered(report: CrashReport) -> None:
    summary = "\n".join(report.lines())
    assert report.delivery.lost == [], summary
    assert report.delivery.wrong == [], summary
    assert report.delivery.unflagged_duplicates == [], summary
    assert report.delivery.not_final == 0, summary
    assert report.orphans == 0, summary


def test_workers_killed_repeatedly_lose_no_message() -> None:
    report = scenario_kill(messages=400, kills=3)

    _assert_recovered(report)
    assert report.delivery.sent == 400


def test_redis_killed_mid_run_loses_no_enqueued_message() -> None:
    report = scenario_redis_restart(messages=300, refusals=3)

    _assert_recovered(report)
    # Producers saw the outage (Redis stays down until they have) and were refused.
    # How long a refusal may take is held by the client's timeouts
    # (tests/test_connection.py); tests/crash.py prints the slowest seen.
    assert report.refused >= 3
    assert report.delivery.sent == report.delivery.messages


def test_api_unreachable_for_a_while_every_message_is_sent_after() -> None:
    report = scenario_api_down(messages=200, down_until="retrying", until_count=5)

    _assert_recovered(report)
    assert report.delivery.sent == 200


def test_api_unreachable_beyond_the_retries_every_message_fails_with_a_reason() -> None:
    report = scenario_api_down(
        messages=60,
        down_until="failed",
        until_count=1,
        max_retries=1,
        retry_backoff=0.5,
        retry_backoff_max=1.0,
    )

    _assert_recovered(report)
    assert report.delivery.failed > 0
    assert report.delivery.sent + report.delivery.failed == 60


def test_producers_facing_a_down_or_frozen_broker_are_refused_and_leave_nothing() -> None:
    report = scenario_broker_down(attempts=2)

    # Every enqueue, against a dead and then a frozen Redis, raised rather than hung.
    assert report.refused == 2 * 4 + 4
    assert report.orphans == 0
