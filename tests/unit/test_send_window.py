from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings, strategies as st

from service.domain.send_window import (CLOSING_MARGIN, QuietHours, in_quiet_hours, last_send_time, next_send_time,
                                 parse_quiet_hours)

RIYADH = ZoneInfo("Asia/Riyadh")
LONDON = ZoneInfo("Europe/London")
NIGHT = QuietHours(time(21), time(9))
UTC = timezone.utc


def riyadh(*args: int) -> datetime:
    return datetime(*args, tzinfo=RIYADH)


# --- parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("21:00-09:00", NIGHT),
    (" 9:00 - 17:30 ", QuietHours(time(9), time(17, 30))),
    ("00:00-23:59", QuietHours(time(0), time(23, 59))),
    ("off", None), ("OFF", None), (" Off ", None),
])
def test_parse_quiet_hours(text, expected):
    assert parse_quiet_hours(text) == expected


@pytest.mark.parametrize("text, says", [
    ("", "HH:MM-HH:MM"), ("21-09", "HH:MM-HH:MM"), ("21:00", "HH:MM-HH:MM"), ("21:00-09:00-10:00", "HH:MM-HH:MM"),
    ("on", "HH:MM-HH:MM"), ("24:00-09:00", "24:00 is not a time of day"), ("21:00-09:60", "09:60 is not a time of day"),
    ("09:00-09:00", "both 09:00"), ("21:000-09:00", "HH:MM-HH:MM"),
])
def test_parse_quiet_hours_rejects_bad_text_saying_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_quiet_hours(text)


def test_quiet_hours_print_as_they_are_written():
    assert str(parse_quiet_hours("21:00-09:00")) == "21:00-09:00"


def test_quiet_hours_bounds_are_whole_minutes():
    with pytest.raises(ValueError):
        QuietHours(time(21, 0, 30), time(9))


# --- in_quiet_hours ------------------------------------------------------------------------

@pytest.mark.parametrize("hour, minute, quiet", [(20, 59, False), (21, 0, True), (23, 59, True), (0, 0, True),
                                                 (8, 59, True), (9, 0, False), (12, 0, False)])
def test_a_window_that_wraps_midnight_includes_its_start_and_excludes_its_end(hour, minute, quiet):
    assert in_quiet_hours(riyadh(2026, 3, 1, hour, minute), RIYADH, NIGHT) is quiet


@pytest.mark.parametrize("hour, quiet", [(12, False), (13, True), (14, True), (15, False)])
def test_a_daytime_window(hour, quiet):
    assert in_quiet_hours(riyadh(2026, 3, 1, hour), "Asia/Riyadh", QuietHours(time(13), time(15))) is quiet


def test_quiet_hours_are_read_in_the_store_zone_whatever_the_moment_zone():
    moment = datetime(2026, 3, 1, 19, 30, tzinfo=UTC)  # 22:30 in Riyadh
    assert in_quiet_hours(moment, RIYADH, NIGHT)
    assert not in_quiet_hours(moment, "UTC", NIGHT)


def test_off_is_never_quiet():
    assert not in_quiet_hours(riyadh(2026, 3, 1, 3), RIYADH, None)


def test_naive_moments_are_refused():
    with pytest.raises(ValueError, match="aware"):
        in_quiet_hours(datetime(2026, 3, 1, 3), RIYADH, NIGHT)
    with pytest.raises(ValueError, match="aware"):
        next_send_time(datetime(2026, 3, 1, 3), RIYADH, NIGHT, None)


# --- next_send_time: examples --------------------------------------------------------------

def test_outside_quiet_hours_it_is_due_now():
    assert next_send_time(riyadh(2026, 3, 1, 12), RIYADH, NIGHT, None) == riyadh(2026, 3, 1, 12)


def test_in_the_evening_it_waits_for_the_next_morning():
    assert next_send_time(riyadh(2026, 3, 1, 22, 15), RIYADH, NIGHT, None) == riyadh(2026, 3, 2, 9)


def test_after_midnight_it_waits_for_the_same_morning():
    assert next_send_time(riyadh(2026, 3, 2, 3), RIYADH, NIGHT, None) == riyadh(2026, 3, 2, 9)


def test_the_answer_is_in_utc_and_aware():
    result = next_send_time(riyadh(2026, 3, 1, 22), "Asia/Riyadh", NIGHT, None)
    assert result.tzinfo == UTC and result == datetime(2026, 3, 2, 6, tzinfo=UTC)


def test_off_sends_at_due():
    assert next_send_time(riyadh(2026, 3, 1, 3), RIYADH, None, None) == riyadh(2026, 3, 1, 3)


def test_points_expiring_before_the_window_opens_are_reminded_lead_before_expiry():
    expires = riyadh(2026, 3, 2, 6)
    assert next_send_time(riyadh(2026, 3, 1, 22), RIYADH, NIGHT, expires) == riyadh(2026, 3, 2, 5, 30)


def test_a_reminder_due_within_lead_of_expiry_goes_out_at_once():
    due = riyadh(2026, 3, 2, 5, 45)
    assert next_send_time(due, RIYADH, NIGHT, riyadh(2026, 3, 2, 6)) == due


def test_expiry_that_leaves_lead_after_opening_changes_nothing():
    assert next_send_time(riyadh(2026, 3, 1, 22), RIYADH, NIGHT, riyadh(2026, 3, 2, 9, 30)) == riyadh(2026, 3, 2, 9)
    assert next_send_time(riyadh(2026, 3, 1, 22), RIYADH, NIGHT, riyadh(2026, 3, 2, 9, 29),
                          lead=timedelta(minutes=30)) == riyadh(2026, 3, 2, 8, 59)


def test_points_already_expired_do_not_break_quiet_hours():
    assert next_send_time(riyadh(2026, 3, 1, 22), RIYADH, NIGHT, riyadh(2026, 3, 1, 21)) == riyadh(2026, 3, 2, 9)


def test_a_negative_lead_is_refused():
    with pytest.raises(ValueError, match="lead"):
        next_send_time(riyadh(2026, 3, 1, 22), RIYADH, NIGHT, None, lead=timedelta(minutes=-1))


# --- next_send_time across DST changes -------------------------------------------------------

def test_a_window_end_skipped_by_spring_forward_opens_at_the_jump():
    # London, 2026-03-29: 01:00 GMT becomes 02:00 BST, so 01:30 never shows on the clock.
    due = datetime(2026, 3, 29, 0, 30, tzinfo=LONDON)
    assert next_send_time(due, LONDON, QuietHours(time(23), time(1, 30)), None) == datetime(2026, 3, 29, 1, tzinfo=UTC)


def test_in_the_repeated_hour_the_window_ends_on_the_right_pass():
    # London, 2026-10-25: 02:00 BST becomes 01:00 GMT, so 01:00-02:00 shows twice.
    quiet = QuietHours(time(0, 45), time(1, 30))
    first_pass = datetime(2026, 10, 25, 0, 50, tzinfo=LONDON)
    second_pass = datetime(2026, 10, 25, 1, 20, tzinfo=LONDON, fold=1)
    assert next_send_time(first_pass, LONDON, quiet, None) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert next_send_time(second_pass, LONDON, quiet, None) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_a_clock_set_back_out_of_the_window_ends_it():
    quiet = QuietHours(time(1, 40), time(2, 30))
    due = datetime(2026, 10, 25, 1, 45, tzinfo=LONDON)  # BST; at 02:00 BST the clock shows 01:00
    assert next_send_time(due, LONDON, quiet, None) == datetime(2026, 10, 25, 1, tzinfo=UTC)


# --- properties ----------------------------------------------------------------------------

ZONES = [ZoneInfo(name) for name in ("Asia/Riyadh", "UTC", "Europe/London", "America/New_York",
                                     "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago",
                                     "Pacific/Apia", "America/St_Johns")]
minutes = st.builds(time, st.integers(0, 23), st.integers(0, 59))
windows = st.tuples(minutes, minutes).filter(lambda pair: pair[0] != pair[1]).map(lambda pair: QuietHours(*pair))
moments = st.datetimes(min_value=datetime(2005, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC))
expiries = st.one_of(st.none(), st.timedeltas(min_value=timedelta(seconds=-3600), max_value=timedelta(days=2)))


@settings(max_examples=400, deadline=None)
@given(moments, st.sampled_from(ZONES), windows, expiries, st.timedeltas(min_value=timedelta(0),
                                                                          max_value=timedelta(hours=6)))
def test_next_send_time_properties(due, zone, quiet, expires_in, lead):
    expires_at = None if expires_in is None else due + expires_in
    result = next_send_time(due, zone, quiet, expires_at, lead)
    assert result.tzinfo is not None
    assert result >= due
    expiry_rule = expires_at is not None and in_quiet_hours(result, zone, quiet)
    if expiry_rule:
        assert due < expires_at and result < expires_at
        assert result == max(due, expires_at - lead)
    else:
        assert not in_quiet_hours(result, zone, quiet)
    assert next_send_time(result, zone, quiet, expires_at, lead) == result


@settings(max_examples=300, deadline=None)
@given(moments, st.sampled_from(ZONES), windows)
def test_the_quiet_stretch_before_the_answer_is_all_quiet(due, zone, quiet):
    """The answer is the earliest open moment: every minute between due and it is quiet."""
    result = next_send_time(due, zone, quiet, None)
    assume(result > due)
    probe = due
    while probe < result:
        assert in_quiet_hours(probe, zone, quiet), f"{probe} is open, yet the answer was {result}"
        probe += timedelta(minutes=1)
    assert not in_quiet_hours(result, zone, quiet)
    assert in_quiet_hours(result - timedelta(seconds=1), zone, quiet) or result - timedelta(seconds=1) < due


@settings(max_examples=300, deadline=None)
@given(moments, st.sampled_from(ZONES), windows, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2)))
def test_last_send_time_is_the_latest_open_moment_before_the_deadline(deadline, zone, quiet, ahead):
    """For a reminder that must reach the shopper by `deadline`: open, not after the deadline,
    and every minute from it (plus the margin) to the deadline is quiet."""
    not_before = deadline - ahead
    result = last_send_time(deadline, zone, quiet, not_before)
    assert not in_quiet_hours(result, zone, quiet)
    if result > deadline:  # no open moment was left: the first one after not_before
        assert result == next_send_time(not_before, zone, quiet, None)
        probe = not_before
        while probe <= deadline:
            assert in_quiet_hours(probe, zone, quiet)
            probe += timedelta(minutes=1)
        return
    assert not_before <= result <= deadline
    if result < deadline:
        assert in_quiet_hours(deadline, zone, quiet)
        probe = result + CLOSING_MARGIN + timedelta(seconds=1)
        while probe <= deadline:
            assert in_quiet_hours(probe, zone, quiet), f"{probe} is open, yet the answer was {result}"
            probe += timedelta(minutes=1)


def test_last_send_time_before_a_quiet_night():
    riyadh = ZoneInfo("Asia/Riyadh")
    deadline = datetime(2026, 11, 25, 23, 0, tzinfo=riyadh)
    quiet = QuietHours(time(21), time(9))
    assert last_send_time(deadline, riyadh, quiet, deadline - timedelta(days=1)) == datetime(2026, 11, 25, 20, 45, tzinfo=riyadh)
    # Too late for that: the first open moment after (the morning).
    assert last_send_time(deadline, riyadh, quiet, deadline - timedelta(hours=1)) == datetime(2026, 11, 26, 9, tzinfo=riyadh)
    assert last_send_time(deadline.replace(hour=15), riyadh, quiet, deadline - timedelta(days=1)) == deadline.replace(hour=15)
