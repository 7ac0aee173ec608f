"""Rows for the Salla sandbox, in the shape `GET /customers/loyalty/points` returns. Pure.

Seeded customers (times relative to the `now` given to `default_customers`, stages 30/7/1 days;
"stage" = what `service.domain.expiry.due_groups` puts where):

| id   | what it is                                                        | 30-day | 7-day | 1-day |
|------|-------------------------------------------------------------------|--------|-------|-------|
| 1001 | 500 pts (100 used) in 3 d; 300 pts in 90 d; fully used lot in 2 d;  |   -    |  400  |   -   |
|      | an expired lot                                                    |        |       |       |
| 1002 | lots 120 d and 200 d away, one expired, one fully used in 10 d    |   -    |   -   |   -   |
| 1003 | 75 lots (5 pages at per_page=15, 2 at 60); three within 30 days,  |   80   |  25   |   -   |
|      | on pages 1, 3 and 5 (at 15 per page), the rest 280+ days away     |        |       |       |
| 1004 | 180 pts (30 used) in 20 d; 90 pts in 12 h                         |  150   |   -   |  90   |
| 1005 | quirks: 20 lots in Salla's observed, off-contract shapes; 250 pts |   -    |  250  |   -   |
|      | in 5 d on the last row (page 2 at per_page=15)                    |        |       |       |

Contract-clean vs quirks. The OpenAPI contract types `order_id`/`reference_id` as (nullable)
strings, but Salla's own example and observed data also carry ints. Customers 1001-1004 follow
the contract (ids are strings or null) so their responses validate against it unchanged; they
still vary the shapes the contract leaves open (`used_at` as {}, null or a date string, `notes`
present or absent). Customer 1005 (`QUIRKS_CUSTOMER`) carries the off-contract shapes: int ids
(including one above 2**32), `used_at` {} and notes mostly absent; the sandbox also gives it
Salla's observed pagination links (only the links that exist) instead of the contract's.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

RIYADH = ZoneInfo("Asia/Riyadh")
CONFIRMED = "مؤكدة"  # the only status value Salla documents
CUSTOM = "مخصصة"  # the lot name in Salla's example

QUIRKS_CUSTOMER = 1005

SEEDED: dict[int, str] = {
    1001: "7-day stage: 400 pts (500 with 100 used, in 3 days); also a lot in 90 days, "
          "a fully used lot in 2 days and an expired lot",
    1002: "nothing to remind: lots 120+ days away, one expired, one fully used in 10 days",
    1003: "75 lots over several pages: 7-day stage 25 pts (page 1), 30-day stage 80 pts "
          "(pages 3 and 5 at per_page=15), the rest 280+ days away",
    1004: "30-day stage: 150 pts (180 with 30 used, in 20 days); 1-day stage: 90 pts in 12 hours",
    1005: "quirks (off-contract shapes as Salla sends them: int ids, used_at {}, links without "
          "previous): 7-day stage 250 pts on the last row (page 2 at per_page=15)",
}

# Points per reminder stage (days) at the seeding `now`, as service.domain.expiry.due_groups sees them.
EXPECTED_STAGE_POINTS: dict[int, dict[int, int]] = {
    1001: {7: 400},
    1002: {},
    1003: {7: 25, 30: 80},
    1004: {30: 150, 1: 90},
    1005: {7: 250},
}


def lot_row(
    points: int,
    used_points: int,
    expires_at: datetime,
    created_at: datetime,
    order_id: str | int | None = None,
    reference_id: str | int | None = None,
    used_at: dict | str | datetime | None = None,
    notes: str | None = None,
    name: str = CUSTOM,
    status: str = CONFIRMED,
) -> dict[str, Any]:
    """One history row as Salla sends it. `notes=None` leaves the key out (Salla omits it);
    `used_at` passes through as given ({} / None / text), a datetime becomes Riyadh local text."""
    if isinstance(used_at, datetime):
        used_at = _local_text(used_at, "used_at")
    row: dict[str, Any] = {
        "name": name,
        "points": points,
        "used_points": used_points,
        "status": status,
        "created_at": {
            # Salla (PHP Carbon) always prints six zero microseconds.
            "date": _local_text(created_at, "created_at") + ".000000",
            "timezone_type": 3,
            "timezone": "Asia/Riyadh",
        },
        # No zone on the wire: readers must take it from created_at.timezone.
        "expiry_date": _local_text(expires_at, "expires_at"),
        "order_id": order_id,
        "used_at": used_at,
    }
    if notes is not None:
        row["notes"] = notes
    row["reference_id"] = reference_id  # key order as in Salla's example
    return row


def default_customers(now: datetime) -> dict[int, list[dict[str, Any]]]:
    """The seeded customers (see the module docstring), newest lot first like Salla's history."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    day = timedelta(days=1)
    return {
        1001: [
            lot_row(300, 0, now + 90 * day, now - 30 * day, used_at=None),
            lot_row(500, 100, now + 3 * day, now - 87 * day, order_id="2116149737",
                    reference_id="41027662", used_at=now - 10 * day, notes="reason text"),
            lot_row(200, 200, now + 2 * day, now - 88 * day, order_id="2116140021",
                    reference_id="41027001", used_at=now - 40 * day, notes="sample note"),
            lot_row(150, 0, now - 5 * day, now - 95 * day, order_id="2116130442",
                    reference_id=None, used_at={}),
        ],
        1002: [
            lot_row(250, 50, now + 200 * day, now - 20 * day, order_id="3300120045",
                    reference_id="52000117", used_at=now - 2 * day, notes="reason text"),
            lot_row(700, 0, now + 120 * day, now - 60 * day, used_at={}),
            lot_row(400, 400, now + 10 * day, now - 80 * day, order_id="3300110020",
                    reference_id="52000090", used_at=now - 15 * day, notes="sample note"),
            lot_row(90, 0, now - 10 * day, now - 100 * day, used_at=None),
        ],
        1003: _many_lots(now),
        1004: [
            lot_row(180, 30, now + 20 * day, now - 70 * day, used_at=now - 3 * day,
                    notes="reason text"),
            lot_row(90, 0, now + timedelta(hours=12), now - 89 * day - timedelta(hours=12),
                    order_id="4400200311", reference_id="63000412", used_at=None),
        ],
        QUIRKS_CUSTOMER: _quirks_lots(now),
    }


# Indexes of 1003's lots that fall within 30 days, with (points, days to expiry).
_NEAR_1003 = {10: (25, 6), 40: (35, 25), 70: (45, 29)}


def _many_lots(now: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(75):
        # Distinct creation times keep each row's identity (service.domain.loyalty key) unique.
        created = now - timedelta(days=i + 1, minutes=7 * i)
        points, expires = 10 + (i * 7) % 90, created + timedelta(days=365)
        if i in _NEAR_1003:
            points, days = _NEAR_1003[i]
            expires = now + timedelta(days=days)
        rows.append(lot_row(
            points,
            # Partly used lots only far from expiry, so the near lots' stage sums stay exact.
            points // 2 if i % 6 == 5 and i not in _NEAR_1003 else 0,
            expires,
            created,
            order_id=None if i % 5 == 4 else str(5500100000 + 13 * i),
            reference_id=None if i % 5 == 4 else str(74000000 + i),
            used_at=({}, None, created + timedelta(days=2))[i % 3],
            notes=f"order {i}" if i % 3 else None,
        ))
    return rows


def _quirks_lots(now: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(19):
        created = now - timedelta(days=2 * i + 1, hours=i)
        rows.append(lot_row(
            100 + 10 * i,
            0,
            created + timedelta(days=400),
            created,
            # Ints as Salla sends them; an occasional string shows the same field mixes both.
            order_id=str(8800100000 + i) if i % 4 == 3 else 98787845454 + i,
            reference_id=None if i % 5 == 0 else 3215487 + i,
            used_at={} if i % 2 else None,
            notes="reason text" if i % 6 == 0 else None,
        ))
    rows.append(lot_row(250, 0, now + timedelta(days=5), now - timedelta(days=85), order_id=123432,
                        reference_id=1234321, used_at={}))
    return rows


def _local_text(moment: datetime, field: str) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{field} must be timezone-aware")
    return moment.astimezone(RIYADH).strftime("%Y-%m-%d %H:%M:%S")
