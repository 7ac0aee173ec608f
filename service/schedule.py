"""What to do about a customer's lots at a moment: send now, hold, or wake up later. Pure.

plan() looks at the lots as last read and answers three lists:
- send_now: stage groups due now, outside quiet hours, with at least one lot not yet reminded
  at this stage or a nearer one;
- hold:     groups due now but inside quiet hours: send when the window opens (or just
  before the lots expire, if that comes first);
- wakeups:  when to look again: the next moment a lot enters a nearer stage, and an hour after
  reminded lots expire (to see whether they were used or lost).
The caller delivers, schedules holds and wake-ups in the due set, and re-plans at each
wake-up from a fresh enough read. Re-planning from data, rather than trusting what was
scheduled, is what lets used points drop out of a reminder before it goes out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Mapping

from service.expiry import StageGroup, due_groups
from service.loyalty import Lot
from service.send_window import QuietHours, next_send_time

SETTLE_AFTER_EXPIRY = timedelta(hours=1)
SETTLE_STAGE = 0  # the due-set "stage" of a wake-up that only settles accounting


@dataclass
class Plan:
    send_now: list[StageGroup] = field(default_factory=list)
    hold: list[tuple[datetime, StageGroup]] = field(default_factory=list)
    wakeups: list[tuple[datetime, int]] = field(default_factory=list)  # (when, stage)


def eligible(lots: Iterable[Lot], now: datetime, excluded_statuses: Iterable[str] = ()) -> list[Lot]:
    """Lots that could be reminded of: points left, not expired, status not excluded."""
    excluded = set(excluded_statuses)
    return [lot for lot in lots if lot.remaining > 0 and lot.expires_at > now and lot.status not in excluded]


def new_lots(group: StageGroup, reminded: Mapping[str, int]) -> list[Lot]:
    """Lots of the group not yet reminded at this stage or a nearer (smaller) one."""
    return [lot for lot in group.lots if reminded.get(lot.key, 10**6) > group.stage_days]


def plan(lots: Iterable[Lot], now: datetime, stages: Iterable[int], zone: str, quiet: QuietHours | None,
         reminded: Mapping[str, int], min_points: int = 1, excluded_statuses: Iterable[str] = (),
         stage_sent: Mapping[int, float] | None = None) -> Plan:
    """`reminded`: lot key -> nearest stage it was reminded at; `stage_sent`: stage -> when
    (unix seconds) this customer last had that stage's reminder.

    A customer gets at most one reminder per stage per stage length (30-day reminders at
    least 30 days apart, ...): lots that enter a stage one by one would otherwise make a
    message per lot. A group held back by that rule gets a wake-up when the pause ends.
    """
    stages = tuple(sorted(set(stages), reverse=True))
    candidates = eligible(lots, now, excluded_statuses)
    stage_sent = stage_sent or {}
    result = Plan()
    resume: dict[int, datetime] = {}
    for group in due_groups(candidates, now, stages, min_points):
        if not new_lots(group, reminded):
            continue
        last = stage_sent.get(group.stage_days)
        if last is not None:
            allowed = datetime.fromtimestamp(last, now.tzinfo) + timedelta(days=group.stage_days)
            if allowed > now:
                resume[group.stage_days] = allowed
                continue
        send_at = next_send_time(now, zone, quiet, expires_at=group.earliest_expiry)
        if send_at <= now:
            result.send_now.append(group)
        else:
            result.hold.append((send_at, group))
    # Earliest expiry first when a window opens on many held reminders.
    result.hold.sort(key=lambda item: (item[0], item[1].earliest_expiry))

    next_entry: dict[int, datetime] = {}
    for lot in candidates:
        for stage in stages:
            entry = lot.expires_at - timedelta(days=stage)
            if entry > now and (stage not in next_entry or entry < next_entry[stage]):
                next_entry[stage] = entry
    # One wake-up per stage (the due set keeps one entry per customer and stage): the earliest.
    for stage, when in resume.items():
        if stage not in next_entry or when < next_entry[stage]:
            next_entry[stage] = when
    result.wakeups = sorted((when, stage) for stage, when in next_entry.items())
    reminded_expiries = [lot.expires_at for lot in candidates if lot.key in reminded]
    if reminded_expiries:
        result.wakeups.append((max(reminded_expiries) + SETTLE_AFTER_EXPIRY, SETTLE_STAGE))
    return result
