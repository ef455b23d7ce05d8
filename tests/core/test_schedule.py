"""send_at and expires_at: the forms Anymail allows, read as Unix seconds (pure)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from mailqueue.core.schedule import parse_when, schedule_of
from mailqueue.errors import ValidationError

MOMENT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "value",
    [
        MOMENT,
        MOMENT.timestamp(),
        int(MOMENT.timestamp()),
        str(int(MOMENT.timestamp())),
        "2030-01-02T03:04:05Z",
        "2030-01-02T03:04:05+00:00",
        "2030-01-02T05:04:05+02:00",
        "2030-01-02T03:04:05",
        MOMENT.astimezone(timezone(timedelta(hours=-7))),
        MOMENT.replace(tzinfo=None),
    ],
)
def test_every_form_names_the_same_moment(value: object) -> None:
    assert parse_when(value, "send_at") == MOMENT.timestamp()


def test_a_date_is_its_midnight_in_utc() -> None:
    assert (
        parse_when(date(2030, 1, 2), "send_at")
        == datetime(2030, 1, 2, tzinfo=timezone.utc).timestamp()
    )


@pytest.mark.parametrize("value", ["soon", "", True, None, [1], {"at": 1}, -1, float("nan"), 1e13])
def test_anything_else_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_when(value, "expires_at")
    assert info.value.field == "expires_at"


def test_a_message_without_times_has_an_empty_schedule() -> None:
    schedule = schedule_of({"to": ["a@example.com"]})
    assert (schedule.send_at, schedule.expires_at) == (None, None)


def test_a_message_schedule_reads_both_times() -> None:
    schedule = schedule_of({"send_at": "2030-01-02T03:04:05Z", "expires_at": MOMENT})
    assert schedule.send_at == schedule.expires_at == MOMENT.timestamp()
