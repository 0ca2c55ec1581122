"""Business hours, so that use of a face-search service at 3 a.m. stands out.

Out-of-hours use matters to a SOC because nobody is around to have asked for it: an officer
searching a face on a Sunday night is more likely private curiosity than casework.  The schedule
is evaluated in a named IANA time zone (``zoneinfo``) rather than a fixed UTC offset, because a
fixed offset is wrong for half the year wherever daylight saving time applies: "07:00" must mean
07:00 on the office clock in both January and July.

Ranges are half-open (``start <= t < end``) so that adjacent ranges ("07:00-12:00",
"12:00-19:00") neither overlap nor leave a gap, and "24:00" may close a day.  A range may not
cross midnight; write one range on each day instead, which keeps each weekday readable on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["WEEKDAYS", "Schedule", "ScheduleError"]

#: Monday first, as ``date.weekday()`` counts.
WEEKDAYS: tuple[str, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)

_RANGE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_KEYS = ("timezone", "business_hours", "holidays")
_MAX_HOLIDAYS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    """A schedule configuration problem; ``where`` is the dotted path of the bad setting."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Office hours per weekday in one time zone, plus whole-day holidays (local dates).

    ``hours[d]`` holds half-open (start, end) minute-of-day ranges for weekday ``d``
    (0 = Monday); an empty tuple means the whole day is out of hours.
    """

    timezone: str
    hours: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date]
    _zone: ZoneInfo

    @classmethod
    def build(
        cls,
        timezone: str,
        hours: Mapping[str, Sequence[str]],
        holidays: Sequence[str | date] = (),
    ) -> Schedule:
        """Build from text settings; raises ScheduleError naming the bad one."""
        return cls.from_mapping(
            {"timezone": timezone, "business_hours": dict(hours), "holidays": list(holidays)}
        )

    @classmethod
    def from_mapping(cls, raw: Any, where: str = "schedule") -> Schedule:
        """Parse the ``schedule:`` configuration section (a plain mapping, e.g. from YAML).

        Weekdays that are not listed have no business hours at all: a forgotten day then
        errs towards flagging use, never towards hiding it.
        """
        if not isinstance(raw, Mapping):
            raise ScheduleError(where, "must be a mapping")
        for key in raw:
            if key not in _KEYS:
                raise ScheduleError(
                    f"{where}.{key}", f"unknown setting (allowed: {', '.join(_KEYS)})"
                )
        tz_name = raw.get("timezone")
        if not isinstance(tz_name, str) or not tz_name.strip():
            raise ScheduleError(
                f"{where}.timezone", "must name an IANA time zone, e.g. Europe/Berlin"
            )
        try:
            zone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"{where}.timezone", f"unknown time zone {tz_name!r}") from None

        raw_hours = raw.get("business_hours")
        if not isinstance(raw_hours, Mapping):
            raise ScheduleError(
                f"{where}.business_hours", "must map weekdays to lists like ['07:00-19:00']"
            )
        per_day: list[tuple[tuple[int, int], ...]] = [() for _ in WEEKDAYS]
        for day, ranges in raw_hours.items():
            day_where = f"{where}.business_hours.{day}"
            if not isinstance(day, str) or day.lower() not in WEEKDAYS:
                raise ScheduleError(day_where, f"not a weekday (use {', '.join(WEEKDAYS)})")
            if ranges is None:
                ranges = []
            if isinstance(ranges, str):
                ranges = [ranges]
            if not isinstance(ranges, Sequence):
                raise ScheduleError(day_where, "must be a list of 'HH:MM-HH:MM' ranges")
            parsed = sorted(
                _parse_range(item, f"{day_where}[{i}]") for i, item in enumerate(ranges)
            )
            for (_, end), (start, _) in pairwise(parsed):
                if start < end:
                    raise ScheduleError(day_where, "ranges overlap")
            per_day[WEEKDAYS.index(day.lower())] = tuple(parsed)

        raw_holidays = raw.get("holidays") or []
        if isinstance(raw_holidays, str | bytes) or not isinstance(raw_holidays, Sequence):
            raise ScheduleError(f"{where}.holidays", "must be a list of dates (YYYY-MM-DD)")
        if len(raw_holidays) > _MAX_HOLIDAYS:
            raise ScheduleError(f"{where}.holidays", f"more than {_MAX_HOLIDAYS} entries")
        holidays: set[date] = set()
        for i, item in enumerate(raw_holidays):
            holidays.add(_parse_date(item, f"{where}.holidays[{i}]"))
        return cls(
            timezone=tz_name,
            hours=tuple(per_day),
            holidays=frozenset(holidays),
            _zone=zone,
        )

    def local_time(self, ts_us: int) -> datetime:
        """The office clock at ``ts_us`` (microseconds since the Unix epoch, UTC)."""
        return (_EPOCH + timedelta(microseconds=ts_us)).astimezone(self._zone)

    def is_out_of_hours(self, ts_us: int) -> bool:
        local = self.local_time(ts_us)
        if local.date() in self.holidays:
            return True
        minute = local.hour * 60 + local.minute
        return not any(start <= minute < end for start, end in self.hours[local.weekday()])


def _parse_range(item: object, where: str) -> tuple[int, int]:
    if not isinstance(item, str):
        raise ScheduleError(where, "must be a string 'HH:MM-HH:MM' (quote it in YAML)")
    m = _RANGE.fullmatch(item)
    if m is None:
        raise ScheduleError(where, f"{item!r} is not 'HH:MM-HH:MM'")
    sh, sm, eh, em = (int(g) for g in m.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
        raise ScheduleError(where, f"{item!r} is not a valid time of day (00:00 to 24:00)")
    start, end = sh * 60 + sm, eh * 60 + em
    if end <= start:
        raise ScheduleError(
            where, f"{item!r} ends before it starts; split ranges that cross midnight by day"
        )
    return start, end


def _parse_date(item: object, where: str) -> date:
    if isinstance(item, datetime):
        raise ScheduleError(where, "must be a date without a time")
    if isinstance(item, date):
        return item
    if not isinstance(item, str):
        raise ScheduleError(where, "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(item.strip())
    except ValueError:
        raise ScheduleError(where, f"{item!r} is not a date YYYY-MM-DD") from None
