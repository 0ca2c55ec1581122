"""Business hours in the office's own time zone, DST included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.alerts.schedule import Schedule, ScheduleError

WEEKDAYS_9_TO_5 = {
    day: ["09:00-12:00", "12:00-17:00"]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("utc", "out"),
    [
        # New York leaves EST (-05:00) on Sunday 2026-03-08.
        ("2026-03-06T13:59:59.999999+00:00", True),  # Fri 08:59:59 EST
        ("2026-03-06T14:00:00+00:00", False),  # Fri 09:00 EST
        ("2026-03-09T13:00:00+00:00", False),  # Mon 09:00 EDT: an hour earlier in UTC
        ("2026-03-09T12:59:59+00:00", True),  # Mon 08:59:59 EDT
        ("2026-03-09T16:00:00+00:00", False),  # 12:00 EDT: adjacent ranges leave no gap
        ("2026-03-09T20:59:59+00:00", False),  # 16:59:59 EDT
        ("2026-03-09T21:00:00+00:00", True),  # 17:00 EDT: the end is exclusive
        ("2026-03-07T15:00:00+00:00", True),  # Saturday: no hours listed
        ("2026-07-03T15:00:00+00:00", True),  # Friday, a listed holiday
        ("2026-11-02T14:00:00+00:00", False),  # Mon 09:00 EST, after the fall back
    ],
)
def test_out_of_hours_follows_the_local_clock_across_dst(utc: str, out: bool) -> None:
    schedule = Schedule.build("America/New_York", WEEKDAYS_9_TO_5, holidays=["2026-07-03"])
    assert schedule.is_out_of_hours(us(utc)) is out


def test_a_day_can_end_at_24_00() -> None:
    schedule = Schedule.build("UTC", {"sunday": ["20:00-24:00"]})
    assert not schedule.is_out_of_hours(us("2026-01-18T23:59:59.999999+00:00"))
    assert schedule.is_out_of_hours(us("2026-01-19T00:00:00+00:00"))


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"timezone": "Nowhere/Special", "business_hours": {}}, "schedule.timezone"),
        ({"timezone": "UTC"}, "schedule.business_hours"),
        ({"timezone": "UTC", "business_hours": {"funday": []}}, "schedule.business_hours.funday"),
        (
            {"timezone": "UTC", "business_hours": {"monday": ["22:00-06:00"]}},
            "schedule.business_hours.monday[0]",
        ),
        (
            {"timezone": "UTC", "business_hours": {"monday": ["9-17"]}},
            "schedule.business_hours.monday[0]",
        ),
        (
            {"timezone": "UTC", "business_hours": {"monday": ["09:00-13:00", "12:00-17:00"]}},
            "schedule.business_hours.monday",
        ),
        ({"timezone": "UTC", "business_hours": {}, "holidays": ["25.12."]}, "schedule.holidays[0]"),
        ({"timezone": "UTC", "business_hours": {}, "weekend": []}, "schedule.weekend"),
    ],
)
def test_schedule_errors_name_the_setting(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.from_mapping(raw)
    assert info.value.where == where


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
    )
)
def test_any_instant_the_engine_accepts_is_classified_without_error(moment: datetime) -> None:
    schedule = Schedule.build("Australia/Lord_Howe", WEEKDAYS_9_TO_5)  # half-hour DST shift
    ts_us = (moment - EPOCH) // timedelta(microseconds=1)
    assert isinstance(schedule.is_out_of_hours(ts_us), bool)
