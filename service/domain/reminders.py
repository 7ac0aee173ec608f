"""Builds the reminder a customer receives for one stage. Pure functions.

The reminder's id is derived from (merchant, customer, stage, lot keys), so the same
lots in the same stage always give the same id: the delivery dedupe key is built on it.

Stages due for one customer at the same moment go out as one reminder (one message per
channel): the nearest expiry's stage in the existing fields, the others in `other_stages`,
each with its own stage, points, expiry, value and lots. The ledger marks every stage's lots
at their own stage (service/state/ledger.py), so each stage still counts as reminded.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Sequence

from service.domain.events import Customer
from service.domain.expiry import StageGroup
from service.domain.messages import plain_message


def reminder_id(merchant_id: int, customer_id: int, stage_days: int, lot_keys, others: Sequence[StageGroup] = ()) -> str:
    identity = f"{merchant_id}|{customer_id}|{stage_days}|{','.join(sorted(lot_keys))}"
    for group in others:  # a reminder with other stages is another reminder than its first stage alone
        identity += f"|{group.stage_days}|{','.join(sorted(lot.key for lot in group.lots))}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def _value(group: StageGroup, point_value_sar: float) -> float | None:
    return round(group.points_expiring * point_value_sar, 2) if point_value_sar > 0 else None


def build_reminder(merchant_id: int, customer: Customer, group: StageGroup, language: str, now: datetime,
                   point_value_sar: float = 0.0, store_name: str = "", others: Sequence[StageGroup] = ()) -> dict:
    """The reminder as delivered by every channel (the webhook body's schema is in the README).
    Channels render their own text from it at send time (service/domain/messages.py, with the store's
    templates); `message` is the shipped SMS text, for the webhook's receiver. `others`: stages
    due at the same moment, expiring after `group`, named in the same message."""
    value = _value(group, point_value_sar)
    reminder = {
        "reminder_id": reminder_id(merchant_id, customer.id, group.stage_days, (lot.key for lot in group.lots),
                                   others),
        "merchant_id": merchant_id,
        "customer_id": customer.id,
        "customer": {"name": customer.name, "mobile": customer.mobile, "email": customer.email},
        "stage_days": group.stage_days,
        "points_expiring": group.points_expiring,
        "earliest_expiry": group.earliest_expiry.isoformat(),
        "language": language,
        "value_sar": value,
        "message": "",
        "lots": [lot.to_dict() for lot in group.lots],
        "other_stages": [{"stage_days": other.stage_days, "points_expiring": other.points_expiring,
                          "earliest_expiry": other.earliest_expiry.isoformat(),
                          "value_sar": _value(other, point_value_sar), "lots": [lot.to_dict() for lot in other.lots]}
                         for other in others],
        "generated_at": now.isoformat(),
    }
    reminder["message"] = plain_message(reminder, store_name)
    return reminder
