"""How a retrying send's wait reads in ``mailqueue status`` and on the dashboard (pure)."""

from __future__ import annotations

from mailqueue.core.send_view import waiting_for


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
