"""What to do about a customer's lots at a moment: send now, hold, or wake up later. Pure.

plan() looks at the lots as last read and answers three lists:
- send_now: stage groups to send now;
- hold:     groups due now but inside quiet hours: send when the window opens (or just
  before the lots expire, if that comes first);
- wakeups:  when to look again: when the next lot is about to enter a stage, when a pause
  ends, and an hour after reminded lots expire (to see whether they were used or lost).
The caller delivers, schedules holds and wake-ups in the due set, and re-plans at each
wake-up from a fresh enough read. Re-planning from data, rather than trusting what was
scheduled, is what lets used points drop out of a reminder before it goes out.

The rules, per stage S (30, 7, 1 days before expiry by default) and look-ahead L
(REMINDER_LOOKAHEAD, a day by default):
- A lot "enters" S when its expiry is S days away. It should be named in an S reminder that
  reaches the shopper no later than that moment, and at most L before it.
- An S reminder names every lot of the customer that is in S now or enters S within L, so
  that lots entering close together share one message (a lot is never hidden behind another).
- It goes out only when one of those lots has not yet been named at S or a nearer stage; as
  late as the earliest such entry allows (so that it can take the most lots along), but
  outside quiet hours: before they begin, never after the lot entered.
- A customer gets at most one S reminder per L: a lot that enters S inside that pause was
  named by the reminder that started it (it entered within L of it).
- One plan names a lot once: a lot in S that enters a nearer stage N within L, beside a lot
  already in N, goes with N's reminder only (it is then named at N, which covers S).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Mapping

from service.domain.expiry import StageGroup, stage_of
from service.domain.loyalty import Lot
from service.domain.send_window import QuietHours, last_send_time, next_send_time

DEFAULT_LOOKAHEAD = timedelta(days=1)
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
    return [lot for lot in group.lots if _is_new(lot, group.stage_days, reminded)]


def _is_new(lot: Lot, stage: int, reminded: Mapping[str, int]) -> bool:
    return reminded.get(lot.key, 10**6) > stage


def _entry(lot: Lot, stage: int) -> datetime:
    return lot.expires_at - timedelta(days=stage)


def plan(lots: Iterable[Lot], now: datetime, stages: Iterable[int], zone: str, quiet: QuietHours | None,
         reminded: Mapping[str, int], min_points: int = 1, excluded_statuses: Iterable[str] = (),
         stage_sent: Mapping[int, float] | None = None, lookahead: timedelta = DEFAULT_LOOKAHEAD) -> Plan:
    """`reminded`: lot key -> nearest stage it was named at; `stage_sent`: stage -> when (unix
    seconds) this customer last had that stage's reminder. The rules are in the module doc."""
    stages = tuple(sorted(set(stages), reverse=True))
    candidates = eligible(lots, now, excluded_statuses)
    stage_sent = stage_sent or {}
    horizon = now + lookahead
    result = Plan()
    wake: dict[int, datetime] = {}

    def wake_at(stage: int, when: datetime) -> None:
        if stage not in wake or when < wake[stage]:
            wake[stage] = when

    # Nearest stage first: a lot that a nearer reminder of this plan names (one entering the
    # nearer stage within the look-ahead) is not named again by its current, farther stage's.
    taken: set[str] = set()
    for stage in reversed(stages):
        inside = [lot for lot in candidates if stage_of(lot, now, stages) == stage and lot.key not in taken]
        # A lot entering S within the look-ahead is in S when it enters (nearer stages start later).
        coming = [lot for lot in candidates if now < _entry(lot, stage) <= horizon and lot.key not in taken]
        new_inside = [lot for lot in inside if _is_new(lot, stage, reminded)]
        new_coming = [lot for lot in coming if _is_new(lot, stage, reminded)]
        beyond = [_entry(lot, stage) for lot in candidates
                  if _entry(lot, stage) > horizon and _is_new(lot, stage, reminded)]
        if beyond:
            # When the first of them is about to enter: it is then `coming`, and due.
            wake_at(stage, last_send_time(min(beyond), zone, quiet, not_before=now))
        if not new_inside and not new_coming:
            continue
        group = StageGroup(stage, tuple(sorted(inside + coming, key=lambda lot: (lot.expires_at, lot.key))))
        if group.points_expiring < min_points:
            continue
        if new_inside:
            target = now  # in the stage already (first seen there, or held back): as soon as allowed
        else:
            target = last_send_time(min(_entry(lot, stage) for lot in new_coming), zone, quiet, not_before=now)
        paused = False
        last = stage_sent.get(stage)
        if last is not None:
            resume = datetime.fromtimestamp(last, now.tzinfo) + lookahead
            if resume > target:
                target, paused = resume, True
        send_at = next_send_time(target, zone, quiet, expires_at=group.earliest_expiry)
        if send_at <= now:
            result.send_now.append(group)
        elif new_inside and not paused:
            result.hold.append((send_at, group))
        else:
            wake_at(stage, send_at)
            continue
        taken.update(lot.key for lot in group.lots)
    # Earliest expiry first when a window opens on many held reminders.
    result.hold.sort(key=lambda item: (item[0], item[1].earliest_expiry))
    result.send_now.sort(key=lambda group: group.earliest_expiry)
    # One wake-up per stage (the due set keeps one entry per customer and stage): the earliest.
    result.wakeups = sorted((when, stage) for stage, when in wake.items())
    reminded_expiries = [lot.expires_at for lot in candidates if lot.key in reminded]
    if reminded_expiries:
        result.wakeups.append((max(reminded_expiries) + SETTLE_AFTER_EXPIRY, SETTLE_STAGE))
    return result
