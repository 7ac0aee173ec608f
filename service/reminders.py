"""Builds the reminder a customer receives for one stage. Pure functions.

The reminder's id is derived from (merchant, customer, stage, lot keys), so the same
lots in the same stage always give the same id: the delivery dedupe key is built on it.
"""
from __future__ import annotations

import hashlib
from datetime import datetime

from service.events import Customer
from service.expiry import StageGroup

_MESSAGES = {
    "ar": "مرحباً {name}، لديك {points} نقطة ولاء تنتهي صلاحيتها في {date}. استخدمها قبل أن تضيع!",
    "en": "Hi {name}, {points} of your loyalty points expire on {date}. Use them before they are gone!",
}
_FALLBACK_NAME = {"ar": "عميلنا العزيز", "en": "there"}


def reminder_id(merchant_id: int, customer_id: int, stage_days: int, lot_keys) -> str:
    identity = f"{merchant_id}|{customer_id}|{stage_days}|{','.join(sorted(lot_keys))}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def message_text(language: str, name: str | None, points: int, expires: datetime) -> str:
    template = _MESSAGES.get(language, _MESSAGES["en"])
    return template.format(name=name or _FALLBACK_NAME.get(language, ""), points=points, date=expires.date().isoformat())


def build_reminder(merchant_id: int, customer: Customer, group: StageGroup, language: str, now: datetime) -> dict:
    """The reminder as delivered by every channel (the webhook body's schema is in the README)."""
    return {
        "reminder_id": reminder_id(merchant_id, customer.id, group.stage_days, (lot.key for lot in group.lots)),
        "merchant_id": merchant_id,
        "customer_id": customer.id,
        "customer": {"name": customer.name, "mobile": customer.mobile, "email": customer.email},
        "stage_days": group.stage_days,
        "points_expiring": group.points_expiring,
        "earliest_expiry": group.earliest_expiry.isoformat(),
        "language": language,
        "message": message_text(language, customer.name, group.points_expiring, group.earliest_expiry),
        "lots": [lot.to_dict() for lot in group.lots],
        "generated_at": now.isoformat(),
    }
