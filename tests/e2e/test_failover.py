"""Redis that can lose a machine: the Sentinel master SIGKILLed mid-run (crash.py failover)."""

from __future__ import annotations

import pytest

from tests.crash import scenario_failover, scenario_failover_answered

pytestmark = pytest.mark.e2e


def test_a_killed_master_loses_no_enqueue_that_returned_an_id() -> None:
    report = scenario_failover(producers=2, pace=0.05, warmup=20, after=30, rejoin=False)
    summary = "\n".join(report.lines())

    assert report.delivery.messages > 0, summary
    assert report.delivery.lost == [], summary
    assert report.delivery.wrong == [], summary
    assert report.delivery.unflagged_duplicates == [], summary
    assert report.delivery.sent == report.delivery.messages, summary
    # The kill must have met producers mid-enqueue, and refused them only
    # while no master was known.
    assert report.refused > 0, summary
    assert report.stray_refusals == 0, summary
    assert report.ok, summary


def test_a_master_killed_while_answers_are_recorded_sends_nothing_twice() -> None:
    # Without Email Logs look-ups (as for the sandbox): only the worker's own
    # records, replicated and written again after the failover, prevent a resend.
    report = scenario_failover_answered(messages=300, kill_after=80, settle=120, reconcile=False)
    summary = "\n".join(report.lines())

    assert report.delivery.lost == [], summary
    assert report.delivery.wrong == [], summary
    assert report.delivery.sent == report.delivery.messages, summary
    assert report.delivery.duplicated == 0, summary
