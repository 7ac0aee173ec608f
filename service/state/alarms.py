"""Operator alarms: something only an operator can fix, shown in /admin/health, /admin/alarms and the CLI.

An alarm is not a store's fault, so it never changes a store's state: a wrong
SALLA_CLIENT_SECRET (Salla answers `invalid_client` to every refresh) must not mark every
store for re-authorization. The work waits instead, and the alarm says why.
Each alarm is a hash `alarm:<name>`: message, since, last, count, and `hold_until` (callers
skip the failing call until then, so a broken secret costs one refresh call per hold, not
one per customer). It expires ALARM_KEEP_SECONDS after its last raise (service/state/keys.py).
"""
from __future__ import annotations

import time

import redis

from service.state.keys import Keys

# An alarm goes by itself this long after it was last raised: a cause that persists raises it
# again on every try, and one that went (the store uninstalled, the provider fixed) leaves no
# stale alarm behind. An operator may clear it sooner.
ALARM_KEEP_SECONDS = 7 * 86400

OAUTH_CLIENT = "oauth_client"  # Salla refuses our client id/secret (or they are not set)


class Alarms:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.keys = Keys(prefix)

    def raise_(self, name: str, message: str, hold_seconds: float = 0, now: float | None = None) -> None:
        now = time.time() if now is None else now
        key = self.keys.alarm(name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "since", f"{now:.0f}")
        pipe.hset(key, mapping={"message": message, "last": f"{now:.0f}", "hold_until": f"{now + hold_seconds:.3f}"})
        pipe.hincrby(key, "count", 1)
        pipe.expire(key, max(ALARM_KEEP_SECONDS, int(hold_seconds) + 60))
        pipe.execute()

    def holding(self, name: str, now: float | None = None) -> str | None:
        """The alarm's message while callers should not try again yet, else None."""
        now = time.time() if now is None else now
        message, until = self.redis.hmget(self.keys.alarm(name), "message", "hold_until")
        if until is not None and float(until) > now:
            return message.decode() if isinstance(message, bytes) else message
        return None

    def clear(self, name: str) -> bool:
        return bool(self.redis.delete(self.keys.alarm(name)))

    def active(self) -> dict[str, dict]:
        found = {}
        for key in self.redis.scan_iter(match=self.keys.alarm_pattern, count=100):
            key = key.decode() if isinstance(key, bytes) else key
            record = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                      for k, v in self.redis.hgetall(key).items()}
            if record:
                found[key.rsplit(":", 1)[-1]] = record
        return found
