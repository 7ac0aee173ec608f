"""Did the reminders save points? Compare two reads of a customer's lots. Pure.

A lot that was reminded and is later seen used before its expiry: points saved (the points
used since the previous read). A reminded lot seen expired with points left: points lost.
Both are credited to the nearest stage the lot was reminded at. A lot is only settled on the
read where it moves from "unexpired" to "expired", so nothing is counted twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping

from service.domain.loyalty import Lot


@dataclass(frozen=True)
class Snapshot:
    remaining: int
    expires_at: float  # unix seconds


@dataclass
class Outcome:
    saved: dict[int, int] = field(default_factory=dict)  # stage -> points
    lost: dict[int, int] = field(default_factory=dict)

    def add(self, bucket: dict[int, int], stage: int, points: int) -> None:
        if points > 0:
            bucket[stage] = bucket.get(stage, 0) + points


def snapshot(lots: Iterable[Lot], now: datetime) -> dict[str, Snapshot]:
    """What to remember of a read: the lots still open (points left, not expired)."""
    return {lot.key: Snapshot(lot.remaining, lot.expires_at.timestamp())
            for lot in lots if lot.remaining > 0 and lot.expires_at > now}


def settle(previous: Mapping[str, Snapshot], current: Iterable[Lot], reminded: Mapping[str, int],
           now: datetime) -> Outcome:
    outcome = Outcome()
    by_key = {lot.key: lot for lot in current}
    moment = now.timestamp()
    for key, before in previous.items():
        stage = reminded.get(key)
        if stage is None or before.remaining <= 0:
            continue
        lot = by_key.get(key)
        if lot is None:
            continue  # the row disappeared from Salla's history: nothing to say about it
        used = before.remaining - lot.remaining
        outcome.add(outcome.saved, stage, used)  # points can only be used before they expire
        if moment >= before.expires_at:
            outcome.add(outcome.lost, stage, lot.remaining)
    return outcome
