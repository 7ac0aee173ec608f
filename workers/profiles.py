"""The latest we heard of each customer (name, mobile, e-mail, notifications flag).

Webhooks carry the customer; a read triggered later (a sweep, a retry) does not, so the
event's copy is kept here for the reminder. Kept for a year after the last event.
"""
from __future__ import annotations

import json

import redis

from service.events import Customer

KEEP_SECONDS = 400 * 24 * 3600


class Profiles:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.prefix = prefix

    def _key(self, merchant_id: int, customer_id: int) -> str:
        return f"{self.prefix}customer:{merchant_id}:{customer_id}"

    def save(self, merchant_id: int, customer: Customer) -> None:
        """Order events don't carry the notifications flag: keep the one a customer event gave."""
        record = customer.to_dict()
        if record["notifications_enabled"] is None:
            previous = self.redis.get(self._key(merchant_id, customer.id))
            if previous is not None:
                record["notifications_enabled"] = json.loads(previous).get("notifications_enabled")
        self.redis.set(self._key(merchant_id, customer.id), json.dumps(record, ensure_ascii=False), ex=KEEP_SECONDS)

    def load(self, merchant_id: int, customer_id: int) -> Customer:
        raw = self.redis.get(self._key(merchant_id, customer_id))
        if raw is None:
            return Customer(id=customer_id, name="", mobile=None, email=None, notifications_enabled=None)
        return Customer.from_dict(json.loads(raw))

    def drop_store(self, merchant_id: int) -> int:
        keys = list(self.redis.scan_iter(match=self._key(merchant_id, "*"), count=1000))  # type: ignore[arg-type]
        return self.redis.delete(*keys) if keys else 0
