"""A reduced fault soak (tests/soak.py): nothing lost, no wrong status, no silent duplicate."""

from __future__ import annotations

import pytest

from tests.soak import SoakReport, run_soak

pytestmark = pytest.mark.e2e


def _assert_sound(report: SoakReport) -> None:
    summary = "\n".join(report.lines())
    assert report.lost == [], summary
    assert report.wrong == [], summary
    assert report.unflagged_duplicates == [], summary
    assert report.not_final == 0, summary
    assert report.sent + report.failed == report.messages, summary
    # Reconciling, every lost answer is found in the local Mailtrap's Email
    # Logs (they list a message before the first look-up): nothing goes out twice.
    assert report.duplicated == 0, summary


def test_soak_one_call_per_message_survives_every_fault() -> None:
    # At least one request per message: with this seed the local Mailtrap's first
    # 100 draws already hold every kind of fault, lost and slow answers included.
    report = run_soak(100, coalesce=False, seed=7, timeout=240)

    _assert_sound(report)
    # The run must actually have met each kind of fault it claims to survive.
    assert {"500", "503", "429", "reset", "slow", "lost"} <= set(report.faults)


def test_soak_coalesced_batches_survive_faults() -> None:
    # Coalesced, 300 messages take a handful of batch calls: raise the fault
    # rates so that several of those calls fail.
    rates = {"500": 0.15, "503": 0.15, "429": 0.15, "reset": 0.1, "slow": 0.1, "lost": 0.1}
    report = run_soak(300, coalesce=True, fault_rates=rates, seed=3, timeout=240)

    _assert_sound(report)
    assert sum(report.faults.values()) > 0


# -- outages: retries that end ---------------------------------------------------
# Short look-up delays (0.5 s) keep these quick; tests/soak.py --outage runs them
# with the soak's own.


def test_soak_an_outage_that_ends_within_the_budget_sends_everything_once() -> None:
    # Every request fails until each send has started two tries; six are allowed.
    report = run_soak(50, fault_rates={}, outage="recovering", max_retries=5, workers=1, settle=0.5)

    _assert_sound(report)
    assert report.sent == 50 and report.most_calls >= 2
    assert report.over_budget == []


def test_soak_an_outage_for_good_dead_letters_everything_within_the_budget() -> None:
    report = run_soak(50, fault_rates={}, outage="permanent", max_retries=2, workers=1, settle=0.5)

    _assert_sound(report)
    assert report.failed == 50 and report.dead_letters == 50
    assert report.accepted_total == 0
    assert report.most_calls == 3 and report.over_budget == []


def test_soak_email_logs_down_resends_only_counted_duplicates() -> None:
    # Lost answers whose look-ups all fall back: each resend is a counted possible duplicate.
    report = run_soak(
        50, fault_rates={"lost": 0.3}, outage="logs-down", max_retries=5, workers=1, settle=0.5
    )

    summary = "\n".join(report.lines())
    assert report.lost == [] and report.wrong == [], summary
    assert report.unflagged_duplicates == [] and report.over_budget == [], summary
    assert report.not_final == 0, summary
    assert report.duplicated > 0 and report.fallbacks > 0, summary
