"""The latest we heard of each customer (name, mobile, e-mail, language, notifications flag).

Webhooks carry the customer; a read triggered later (a sweep, a retry) does not, so the
event's copy is kept here for the reminder. Kept for DATA_RETENTION_DAYS after the last event (or backfill listing).

A hash, written field by field with no read first: order events don't carry the
notifications flag, so they write the other fields only, and an order event handled at the
same moment as a `customer.updated` that opts out can never write the old flag back. The same
goes for the language. `unsubscribed_at` is set by the unsubscribe link (service/unsubscribe.py)
and by nothing Salla sends: once there, the customer counts as opted out whatever Salla's flag says.
"""
from __future__ import annotations

import redis

from service.events import Customer
from service.keys import Keys

KEEP_SECONDS = 400 * 24 * 3600
_FLAG = {"1": True, "0": False}


class Profiles:
    def __init__(self, store: redis.Redis, prefix: str, keep_seconds: int = KEEP_SECONDS):
        self.redis = store
        self.keys = Keys(prefix)
        # DATA_RETENTION_DAYS: a customer not seen for that long is forgotten (the TTL is
        # renewed at every event, and at every backfill that lists them).
        self.keep_seconds = keep_seconds

    def _key(self, merchant_id: int, customer_id: int) -> str:
        return self.keys.store(merchant_id).profile(customer_id)

    def save(self, merchant_id: int, customer: Customer) -> None:
        key = self._key(merchant_id, customer.id)
        fields = {"name": customer.name or "", "mobile": customer.mobile or "", "email": customer.email or ""}
        if customer.notifications_enabled is not None:
            fields["notifications_enabled"] = "1" if customer.notifications_enabled else "0"
        if customer.lang:
            fields["lang"] = customer.lang
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.keep_seconds)
        pipe.execute()

    def load(self, merchant_id: int, customer_id: int) -> Customer:
        raw = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in self.redis.hgetall(self._key(merchant_id, customer_id)).items()}
        enabled = False if raw.get("unsubscribed_at") else _FLAG.get(raw.get("notifications_enabled", ""))
        return Customer(id=customer_id, name=raw.get("name", ""), mobile=raw.get("mobile") or None,
                        email=raw.get("email") or None, notifications_enabled=enabled, lang=raw.get("lang") or None)

    def unsubscribe(self, merchant_id: int, customer_id: int, now: float) -> bool:
        """The customer used the unsubscribe link; True the first time."""
        key = self._key(merchant_id, customer_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "unsubscribed_at", f"{now:.0f}")
        pipe.hset(key, "notifications_enabled", "0")
        pipe.expire(key, self.keep_seconds)
        return bool(pipe.execute()[0])
