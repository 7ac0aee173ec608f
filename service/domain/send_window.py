"""Quiet hours: when a reminder may go out, in the store's own time zone. Pure functions.

A quiet window "21:00-09:00" holds every moment whose wall-clock time t in the store's zone has
21:00 <= t or t < 09:00 (start included, end excluded); "13:00-15:00" holds 13:00 <= t < 15:00.

Results are returned in UTC. Python compares and subtracts two datetimes that share a tzinfo by
their wall clocks, which is wrong across a DST fold; UTC instants have no such trap.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_FORMAT_HINT = "expected 'HH:MM-HH:MM' in the store's time zone (e.g. '21:00-09:00') or 'off'"
# A window is shorter than a day, so some wall-clock time outside it comes within two days;
# four leaves room for a skipped calendar day (Pacific/Apia skipped 2011-12-30).
_LOOKAHEAD_DAYS = 4
# UTC offsets change at most a few times a year, never twice within this step.
_OFFSET_PROBE_STEP = timedelta(hours=1)


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if bound.tzinfo is not None or bound.second or bound.microsecond:
                raise ValueError(f"quiet hours bounds are naive wall-clock minutes, got {bound!r}")
        if self.start == self.end:
            raise ValueError(f"quiet hours start and end are both {self.start:%H:%M}: "
                             "give a window of at least one minute, or 'off'")

    @property
    def wraps_midnight(self) -> bool:
        return self.end < self.start

    def holds(self, wall: time) -> bool:
        if self.wraps_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_quiet_hours(text: str) -> QuietHours | None:
    """'21:00-09:00' (may wrap midnight) or 'off' (None). Anything else raises ValueError."""
    if text.strip().lower() == "off":
        return None
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f"{_FORMAT_HINT}, got {text!r}")
    hour_a, minute_a, hour_b, minute_b = (int(part) for part in match.groups())
    for hour, minute in ((hour_a, minute_a), (hour_b, minute_b)):
        if hour > 23 or minute > 59:
            raise ValueError(f"{hour:02d}:{minute:02d} is not a time of day ({_FORMAT_HINT}), got {text!r}")
    return QuietHours(time(hour_a, minute_a), time(hour_b, minute_b))


def in_quiet_hours(moment: datetime, zone: ZoneInfo | str, quiet: QuietHours | None) -> bool:
    _require_aware(moment, "moment")
    if quiet is None:
        return False
    return quiet.holds(moment.astimezone(_zone(zone)).time().replace(tzinfo=None))


def next_send_time(due: datetime, zone: ZoneInfo | str, quiet: QuietHours | None,
                   expires_at: datetime | None, lead: timedelta = timedelta(minutes=30)) -> datetime:
    """The earliest moment at or after `due` outside the quiet window, in UTC.

    Expiry rule: if that moment leaves less than `lead` before `expires_at`, waiting would make
    the reminder useless, so it goes out at `expires_at - lead` (but not before `due`), quiet
    hours or not. It applies only while `due < expires_at`: after that the points are gone and
    there is nothing to hurry for.
    """
    _require_aware(due, "due")
    if lead < timedelta(0):
        raise ValueError(f"lead must not be negative, got {lead}")
    zone = _zone(zone)
    due = due.astimezone(timezone.utc)
    if not in_quiet_hours(due, zone, quiet):
        return due
    opening = _window_opening(due, zone, quiet)
    if expires_at is not None:
        _require_aware(expires_at, "expires_at")
        expires_at = expires_at.astimezone(timezone.utc)
        latest = expires_at - lead
        if due < expires_at and opening > latest:
            return max(due, latest)
    return opening


# How long before quiet hours begin a reminder that must go out before them is planned: a
# sweep that runs a little late still finds the window open.
CLOSING_MARGIN = timedelta(minutes=15)


def last_send_time(deadline: datetime, zone: ZoneInfo | str, quiet: QuietHours | None,
                   not_before: datetime) -> datetime:
    """The latest moment at or before `deadline` outside the quiet window, in UTC; `CLOSING_MARGIN`
    before the window closes when `deadline` falls inside it.

    For a reminder that should reach the shopper by `deadline` (the moment a lot enters a
    stage). If no such moment is left at or after `not_before`, the deadline cannot be met
    and the answer is the first open moment after `not_before` (next_send_time).
    """
    _require_aware(deadline, "deadline")
    _require_aware(not_before, "not_before")
    zone = _zone(zone)
    deadline = deadline.astimezone(timezone.utc)
    not_before = not_before.astimezone(timezone.utc)
    if not in_quiet_hours(deadline, zone, quiet):
        latest = deadline
    else:
        closed_at = _window_closing(deadline, zone, quiet)
        latest = closed_at - CLOSING_MARGIN
        if in_quiet_hours(latest, zone, quiet):  # an open spell shorter than the margin
            latest = closed_at - timedelta(seconds=1)
    if latest >= not_before:
        return latest
    return next_send_time(not_before, zone, quiet, expires_at=None)


def _window_closing(moment: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """The first instant of the quiet spell that holds `moment` (UTC): the latest instant at or
    before it where the window begins, by the wall clock reaching `quiet.start` or by an
    offset change jumping into the window. A window is shorter than a day, so the spell began
    within the last two days."""
    first_day = moment.astimezone(zone).date() - timedelta(days=2)
    candidates = [instant
                  for day in (first_day + timedelta(days=n) for n in range(4))
                  for instant in _wall_instants(day, quiet.start, zone)
                  if instant <= moment]
    candidates += _offset_changes(moment - timedelta(days=2), moment, zone)
    starts = [instant for instant in candidates
              if in_quiet_hours(instant, zone, quiet) and not in_quiet_hours(instant - timedelta(seconds=1), zone, quiet)]
    if not starts:
        raise ValueError(f"no start of quiet hours {quiet} within two days before {moment}")
    return max(starts)


def _window_opening(due: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """The first instant after `due` (UTC, inside the window) that is outside the window.

    Quiet hours can end in two ways only: the wall clock reaches `quiet.end`, or a UTC-offset
    change makes the wall clock jump out of the window (a DST gap can skip `quiet.end`
    altogether, a fold can jump back before `quiet.start`). So the answer is the earliest
    instant of either kind that is outside the window.
    """
    first_day = due.astimezone(zone).date() - timedelta(days=1)
    candidates = [moment
                  for day in (first_day + timedelta(days=n) for n in range(_LOOKAHEAD_DAYS + 1))
                  for moment in _wall_instants(day, quiet.end, zone)
                  if moment > due]
    horizon = min(candidates, default=due + timedelta(days=_LOOKAHEAD_DAYS))
    candidates += _offset_changes(due, horizon, zone)
    open_moments = [moment for moment in candidates if not in_quiet_hours(moment, zone, quiet)]
    if not open_moments:
        raise ValueError(f"no moment outside quiet hours {quiet} within {_LOOKAHEAD_DAYS} days of {due}")
    return min(open_moments)


def _wall_instants(day: date, wall: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants at which the clock in `zone` shows `wall` on `day`: none in a DST gap,
    two in a fold, one otherwise."""
    instants = []
    for fold in (0, 1):
        local = datetime.combine(day, wall, tzinfo=zone).replace(fold=fold)
        instant = local.astimezone(timezone.utc)
        if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
            instants.append(instant)
    return sorted(set(instants))


def _offset_changes(start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    """UTC instants in (start, end] at which the zone's UTC offset changes, to the second."""
    changes = []
    low = start
    while low < end:
        high = min(low + _OFFSET_PROBE_STEP, end)
        if low.astimezone(zone).utcoffset() != high.astimezone(zone).utcoffset():
            changes.append(_bisect_offset_change(low, high, zone))
        low = high
    return changes


def _bisect_offset_change(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first whole second in (low, high] with high's offset: tz data changes offsets on
    whole seconds, so flooring both ends keeps low on the old offset and high on the new one."""
    before = low.astimezone(zone).utcoffset()
    low_s, high_s = int(low.timestamp()), int(high.timestamp())
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low_s = middle
        else:
            high_s = middle
    return datetime.fromtimestamp(high_s, timezone.utc)


def _zone(zone: ZoneInfo | str) -> ZoneInfo:
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment!r}")
