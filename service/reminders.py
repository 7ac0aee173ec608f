"""Builds the reminder a customer receives for one stage. Pure functions.

The reminder's id is derived from (merchant, customer, stage, lot keys), so the same
lots in the same stage always give the same id: the delivery dedupe key is built on it.
"""
from __future__ import annotations

import hashlib
from datetime import datetime

from service.events import Customer
from service.expiry import StageGroup

# Lots of one stage may expire on different days: then the message names the first day.
_MESSAGES = {
    ("ar", "on"): "مرحباً {name}، لديك {points} نقطة ولاء تنتهي صلاحيتها في {date}. استخدمها قبل أن تضيع!",
    ("ar", "from"): "مرحباً {name}، لديك {points} نقطة ولاء تبدأ صلاحيتها بالانتهاء في {date}. استخدمها قبل أن تضيع!",
    ("en", "on"): "Hi {name}, {points} of your loyalty points expire on {date}. Use them before they are gone!",
    ("en", "from"): "Hi {name}, {points} of your loyalty points start expiring on {date}. Use them before they are gone!",
}
_FALLBACK_NAME = {"ar": "عميلنا العزيز", "en": "there"}


def reminder_id(merchant_id: int, customer_id: int, stage_days: int, lot_keys) -> str:
    identity = f"{merchant_id}|{customer_id}|{stage_days}|{','.join(sorted(lot_keys))}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def message_text(language: str, name: str | None, points: int, first: datetime, last: datetime | None = None) -> str:
    """The customer-facing sentence; `first`/`last` are the earliest and latest expiry of the lots."""
    language = language if language in _FALLBACK_NAME else "en"
    same_day = last is None or last.date() == first.date()
    template = _MESSAGES[(language, "on" if same_day else "from")]
    return template.format(name=name or _FALLBACK_NAME[language], points=points, date=first.date().isoformat())


_VALUE = {"ar": " (قيمتها {value} ر.س)", "en": " (worth SAR {value})"}


def build_reminder(merchant_id: int, customer: Customer, group: StageGroup, language: str, now: datetime,
                   point_value_sar: float = 0.0) -> dict:
    """The reminder as delivered by every channel (the webhook body's schema is in the README)."""
    value = round(group.points_expiring * point_value_sar, 2) if point_value_sar > 0 else None
    message = message_text(language, customer.name, group.points_expiring, group.earliest_expiry, group.lots[-1].expires_at)
    if value is not None:
        # The value goes right after the sentence that names the points, before the call to action.
        first, _, rest = message.partition(". ")
        message = f"{first}{_VALUE.get(language, _VALUE['en']).format(value=f'{value:.2f}')}. {rest}".rstrip()
    return {
        "reminder_id": reminder_id(merchant_id, customer.id, group.stage_days, (lot.key for lot in group.lots)),
        "merchant_id": merchant_id,
        "customer_id": customer.id,
        "customer": {"name": customer.name, "mobile": customer.mobile, "email": customer.email},
        "stage_days": group.stage_days,
        "points_expiring": group.points_expiring,
        "earliest_expiry": group.earliest_expiry.isoformat(),
        "language": language,
        "value_sar": value,
        "message": message,
        "lots": [lot.to_dict() for lot in group.lots],
        "generated_at": now.isoformat(),
    }
