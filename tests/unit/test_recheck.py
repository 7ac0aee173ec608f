"""A held reminder re-checked against a fresh read: one read, one count, then it is done."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import pytest
import requests

from service.domain.events import Customer
from service.domain.loyalty import Lot
from service.config.settings import SettingsError
from tests.conftest import make_settings
from workers import reminding
from workers.delivery import deliver
from service.ops.runtime import build_runtime

RIYADH = ZoneInfo("Asia/Riyadh")
NIGHT = datetime(2026, 11, 25, 22, 0, tzinfo=RIYADH)  # inside the quiet hours (21:00-09:00)
OPENS = datetime(2026, 11, 26, 9, 0, tzinfo=RIYADH)
M, C = 1, 7


class Clock:
    def __init__(self, start: datetime):
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


def _lot(used: int) -> Lot:
    return Lot(key="a", name="", points=400, used_points=used, status="مؤكدة", created_at=NIGHT - timedelta(days=300),
               expires_at=NIGHT + timedelta(days=3), order_id=None, reference_id=None)


@pytest.mark.parametrize("max_age", [60, 3600])
def test_a_held_entry_is_read_once_and_counted_once(max_age):
    """Issue 15 item 16: a held reminder whose points were used before the window opened is
    re-read once and counted once as `redeemed_before_reminder`. With REMINDER_RECHECK_MAX_AGE
    below the 900 s an entry waits for its read, it was read every 15 minutes and counted each
    time, forever; at 3600 it was counted twice (by the read, then by the entry that waited)."""
    clock = Clock(NIGHT)
    # Built past the settings' bound on purpose: the logic itself must not loop.
    settings = dataclasses.replace(make_settings(QUIET_HOURS="21:00-09:00"), reminder_recheck_max_age_seconds=max_age)
    rt = build_runtime(settings, fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=clock)
    rt.channels = []
    customer = Customer(C, "Sara", "+966500000001", None, None)
    state = {"used": 0}
    reads = []

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), timezone.utc)

    def publish(m, c, rid):
        deliver(rt, m, c, rid, clock())

    def read(m, c):
        reads.append(now())
        reminding.after_read(rt, m, customer, [_lot(state["used"])], now(), publish)

    read(M, C)  # 22:00: the 7-day reminder is held until 09:00
    assert rt.due.pending_count() > 0
    state["used"] = 400  # every point used at 23:00
    clock.now = OPENS.timestamp()
    for _ in range(6 * 60):  # beat's ticks, a minute apart, for six hours
        clock.now += 60
        reminding.sweep(rt, now(), publish, read)
    assert len(reads) == 2, [r.astimezone(RIYADH).strftime("%H:%M") for r in reads]
    stats = rt.store.hgetall(rt.keys.store(M).stats)
    assert stats.get("7:redeemed_before_reminder") == "1"


@pytest.mark.parametrize("value", ["0", "60", "899"])
def test_a_recheck_age_below_the_wait_for_a_read_is_refused(value):
    """Issue 15 item 16: REMINDER_RECHECK_MAX_AGE below 900 s is refused at start-up, naming why."""
    with pytest.raises(SettingsError, match="REMINDER_RECHECK_MAX_AGE.*900"):
        make_settings(REMINDER_RECHECK_MAX_AGE=value)
    assert make_settings(REMINDER_RECHECK_MAX_AGE="900").reminder_recheck_max_age_seconds == 900


def test_the_read_that_answers_a_held_entry_keeps_the_timer_of_the_reminder_it_queues():
    """Issue 15 item 16: the held entry and the delivery timer of the reminder the read queues
    are one due-set member (same stage, same lots): ending the answered entry must not end the
    timer, or a delivery lost with its worker would never be published again."""
    clock = Clock(NIGHT)
    rt = build_runtime(make_settings(QUIET_HOURS="21:00-09:00"), fakeredis.FakeRedis(decode_responses=True),
                       requests.Session(), clock=clock)
    customer = Customer(C, "Sara", "+966500000001", None, None)
    published = []

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), timezone.utc)

    def read(m, c):
        reminding.after_read(rt, m, customer, [_lot(0)], now(), lambda *a: published.append(a))

    read(M, C)  # 22:00: held until 09:00
    clock.now = (OPENS + timedelta(minutes=1)).timestamp()  # the 22:00 read is older than an hour
    result = reminding.sweep(rt, now(), lambda *a: published.append(a), read)
    assert result.reads_requested == 1 and len(published) == 1  # queued; its worker "dies" before sending
    clock.now += 120  # past the delivery's lease
    again = reminding.sweep(rt, now(), lambda *a: published.append(a), read)
    assert again.deliveries_published == 1 and published[-1] == published[0]
