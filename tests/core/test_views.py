"""How campaigns and sends read (pure): a campaign's one line with its progress bar, share,
rate, ETA and counts; what a retrying send waits for."""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.core.views import BAR_WIDTH, campaign_line, duration, waiting_for


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


# -- a retrying send's wait --------------------------------------------------------


def test_a_send_without_a_budget_figure_waits_for_its_next_try() -> None:
    assert waiting_for({"state": "retrying"}) == "its next try"


def test_a_lost_answer_waits_for_a_look_up_in_email_logs() -> None:
    said = waiting_for({"waiting_for": "look-up"})

    assert said == "a look-up in Email Logs (Mailtrap's answer was lost)"


def test_one_try_left_is_singular_and_several_are_plural() -> None:
    assert waiting_for({"tries_left": 1}) == "its next try; 1 try left"
    assert waiting_for({"tries_left": 3}) == "its next try; 3 tries left"


def test_no_try_left_says_the_send_ends_failed_unless_found() -> None:
    said = waiting_for({"waiting_for": "look-up", "tries_left": 0})

    assert said.endswith("; no try left: unless found there, it ends failed")
    assert said.startswith("a look-up in Email Logs")
