"""One customer's sync: read their points history, work out what is due, deliver it.

The I/O (Salla, Redis, channels) is passed in, so tests call this with fakes or real parts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import redis

from service.events import Customer
from service.expiry import due_groups
from service.loyalty import parse_history
from service.reminders import build_reminder
from service.settings import Settings
from workers.delivery import deliver
from workers.salla_client import SallaClient, SallaPermanentError

log = logging.getLogger(__name__)

# Keep a "sent" mark this long past the lots' last expiry: by then they cannot be due again.
SENT_MARK_MARGIN_SECONDS = 2 * 24 * 3600


@dataclass
class SyncResult:
    lots: int = 0
    unreadable_rows: int = 0
    reminders: list[str] = field(default_factory=list)  # reminder ids due now
    sent: int = 0
    skipped: str | None = None


def sync_customer(message: dict, *, settings: Settings, store: redis.Redis, client: SallaClient,
                  channels, now: datetime) -> SyncResult:
    merchant_id = int(message["merchant_id"])
    customer = Customer.from_dict(message["customer"])
    token = settings.salla_access_token
    if not token:
        log.error("no Salla access token for merchant=%s: set SALLA_ACCESS_TOKEN (customer=%s not synced)",
                  merchant_id, customer.id)
        return SyncResult(skipped="no access token")

    try:
        rows = client.loyalty_history(token, customer.id)
    except SallaPermanentError as exc:
        log.error("loyalty history refused for merchant=%s customer=%s: %s", merchant_id, customer.id, exc)
        return SyncResult(skipped=f"salla {exc.status}")

    lots, problems = parse_history(rows, settings.store_timezone)
    for problem in problems:
        log.warning("unreadable loyalty row merchant=%s customer=%s: %s", merchant_id, customer.id, problem)
    result = SyncResult(lots=len(lots), unreadable_rows=len(problems))

    for group in due_groups(lots, now, settings.reminder_stages_days, settings.reminder_min_points):
        reminder = build_reminder(merchant_id, customer, group, settings.reminder_language, now)
        last_expiry = max(lot.expires_at for lot in group.lots)
        keep = int((last_expiry - now).total_seconds()) + SENT_MARK_MARGIN_SECONDS
        report = deliver(reminder, channels, store, settings.redis_key_prefix, keep)
        result.reminders.append(reminder["reminder_id"])
        result.sent += len(report.sent)
    log.info("synced merchant=%s customer=%s lots=%d due=%d sent=%d", merchant_id, customer.id,
             result.lots, len(result.reminders), result.sent)
    return result
