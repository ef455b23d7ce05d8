"""A campaign's one line on the command line: progress bar, share, rate, ETA, counts (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.core.campaign_view import BAR_WIDTH, campaign_line, duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (12.4, "12s"), (185, "3m 05s"), (3720, "1h 02m"), (-5, "0s")],
)
def test_durations_read_in_the_two_largest_units(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "spring",
        "state": "running",
        "recipients": 200,
        "counts": {"waiting": 100, "sent": 90, "failed": 10},
        "rate_per_second": 12.5,
        "eta_seconds": 8,
    }
    return base | overrides


def test_a_running_campaign_shows_its_bar_share_rate_eta_and_counts() -> None:
    fields = campaign_line(record(), width=10).split("  ")

    assert fields == [
        "spring",
        "running",
        "[#####.....]",
        " 50%",
        "100/200",
        "12.5/s",
        "ETA 8s",
        "waiting=100",
        "sent=90",
        "failed=10",
    ]


def test_counts_follow_the_funnel_then_unknown_names_alphabetically() -> None:
    counts = {"zeta": 1, "failed": 2, "alpha": 3, "sent": 4, "waiting": 0}

    line = campaign_line(record(counts=counts))

    assert line.endswith("waiting=0  sent=4  failed=2  alpha=3  zeta=1")


def test_a_campaign_without_recipients_is_shown_complete() -> None:
    line = campaign_line(record(recipients=0, counts={}))

    assert f"[{'#' * BAR_WIDTH}]" in line
    assert "100%" in line and "0/0" in line


def test_no_rate_and_no_eta_are_dashes() -> None:
    line = campaign_line(record(rate_per_second=None, eta_seconds=None))

    assert "  -/s  " in line and "ETA -" in line


def test_a_paused_campaign_gives_its_reason_and_a_running_one_does_not() -> None:
    paused = campaign_line(record(state="paused", reason="bounces above 5%"))
    running = campaign_line(record(reason="bounces above 5%"))

    assert paused.endswith("  (paused: bounces above 5%)")
    assert "paused:" not in running
