"""What `mailqueue status` says about a send that waits, from the fleet's heartbeats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mailqueue.cli.views import STALL_AFTER, format_group, format_status, stall_note
from mailqueue.store.groups import GroupProgress
from mailqueue.store.waker import Activity

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def record(state: str = "queued", waited: float = 60.0, **extra: object) -> dict[str, object]:
    stamp = (NOW - timedelta(seconds=waited)).isoformat().replace("+00:00", "Z")
    return {"id": "s1", "state": state, "created_at": stamp, "updated_at": stamp, **extra}


def idle(seconds: float | None, waiting: int = 3) -> Activity:
    beat = None if seconds is None else NOW.timestamp() - seconds
    return Activity(live_drains=0, last_heartbeat=beat, waiting=waiting)


def test_a_send_left_waiting_while_no_drain_runs_names_how_long_the_fleet_is_idle() -> None:
    note = stall_note(record(), idle(300), now=NOW)

    assert note == "no worker has drained the queue for 5 min: is one running? (mailqueue worker)"


def test_with_no_heartbeat_on_record_it_says_none_drained_recently() -> None:
    note = stall_note(record(), idle(None), now=NOW)

    assert note is not None and note.startswith("no worker has drained the queue recently")


def test_no_note_while_a_drain_runs() -> None:
    busy = Activity(live_drains=2, last_heartbeat=NOW.timestamp(), waiting=500)

    assert stall_note(record(), busy, now=NOW) is None


def test_no_note_for_a_send_queued_moments_ago() -> None:
    assert stall_note(record(waited=STALL_AFTER / 2), idle(300), now=NOW) is None


def test_no_note_for_a_retry_not_yet_due() -> None:
    due = (NOW + timedelta(seconds=30)).isoformat()
    waiting = record("retrying", next_attempt_at=due)

    assert stall_note(waiting, idle(300), now=NOW) is None


def test_no_note_for_a_final_send() -> None:
    assert stall_note(record("sent"), idle(300), now=NOW) is None


def test_the_status_table_shows_the_backlog_of_a_waiting_send_only() -> None:
    activity = Activity(live_drains=1, last_heartbeat=NOW.timestamp(), waiting=42)

    waiting = format_status(record(), activity)
    sent = format_status(record("sent"), activity)

    assert "backlog   42 message(s) in the outbox waiting for a worker; 1 drain running" in waiting
    assert "backlog" not in sent


def test_a_groups_progress_shows_counts_and_the_idle_fleet_until_it_is_done() -> None:
    running = GroupProgress("g1", {"queued": 2, "sent": 3})
    done = GroupProgress("g1", {"sent": 4, "failed": 1})

    shown = format_group(running, idle(600), now=NOW.timestamp())

    assert "sends     5" in shown and "finished  3" in shown
    assert "states    queued=2  sent=3" in shown
    assert "no worker has drained the queue for 10 min" in shown
    assert "note" not in format_group(done, idle(600), now=NOW.timestamp())
    assert "note" not in format_group(running, idle(STALL_AFTER / 2), now=NOW.timestamp())


def test_a_record_says_what_email_logs_found_and_which_look_ups_failed() -> None:
    text = format_status(record("sent", reconciled=3, reconcile_fallbacks=1, possible_duplicates=1))
    assert "found in Email Logs  3" in text
    assert "look-ups failed      1" in text
    assert "possible duplicates  1" in text
