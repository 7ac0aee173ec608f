"""Which points expire within which reminder stage. Pure functions of (lots, now, stages).

A stage of N days is "entered" by a lot once its expiry is at most N days away. A lot
belongs to the nearest stage it has entered (the smallest N), so a lot expiring in 3 days
is in the 7-day stage, not the 30-day one, and a lot is in at most one stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from service.domain.loyalty import Lot


@dataclass(frozen=True)
class StageGroup:
    """All of one customer's lots that sit in one stage: one reminder."""

    stage_days: int
    lots: tuple[Lot, ...]  # earliest expiry first

    @property
    def points_expiring(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    @property
    def earliest_expiry(self) -> datetime:
        return self.lots[0].expires_at


def stage_of(lot: Lot, now: datetime, stages: Iterable[int]) -> int | None:
    """The nearest stage `lot` has entered at `now`, or None (not yet due, expired or used up)."""
    if lot.remaining <= 0:
        return None
    left = lot.expires_at - now
    if left <= timedelta(0):
        return None
    entered = [days for days in stages if left <= timedelta(days=days)]
    return min(entered) if entered else None


def due_groups(
    lots: Iterable[Lot],
    now: datetime,
    stages: Iterable[int],
    min_points: int = 1,
) -> list[StageGroup]:
    """One group per stage that has lots in it now, worth at least `min_points`; soonest first."""
    stages = tuple(stages)
    by_stage: dict[int, list[Lot]] = {}
    for lot in lots:
        stage = stage_of(lot, now, stages)
        if stage is not None:
            by_stage.setdefault(stage, []).append(lot)
    groups = [
        StageGroup(stage, tuple(sorted(members, key=lambda lot: (lot.expires_at, lot.key))))
        for stage, members in by_stage.items()
    ]
    return sorted(
        (g for g in groups if g.points_expiring >= min_points),
        key=lambda g: g.earliest_expiry,
    )
