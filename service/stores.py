"""What we know about each store: its state, its settings and its counters, in Redis.

Keys (all under REDIS_KEY_PREFIX):
- `stores`                      set of every merchant id seen
- `store:{m}:state`             hash: state (active | needs_reauth | uninstalled), reason, since
- `store:{m}:config`            hash: per-store overrides (plan_limit, point_value_sar, paused)
- `store:{m}:counters`          hash: operator counters (reads, reminders_sent, dropped_*, ...)
- `store:{m}:no_loyalty`        string with a TTL: the loyalty app is missing, don't poll
- `store:{m}:blocked_until`     string: Salla said wait (429 Retry-After / X-RateLimit-Reset)
"""
from __future__ import annotations

import time

import redis

ACTIVE, NEEDS_REAUTH, UNINSTALLED = "active", "needs_reauth", "uninstalled"
CONFIG_FIELDS = {"plan_limit": int, "point_value_sar": float, "paused": int}


class StoreRegistry:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.prefix = prefix

    def key(self, merchant_id: int, part: str) -> str:
        return f"{self.prefix}store:{merchant_id}:{part}"

    # -- state -----------------------------------------------------------------------------
    def set_state(self, merchant_id: int, state: str, reason: str = "", now: float | None = None) -> None:
        pipe = self.redis.pipeline()
        pipe.sadd(f"{self.prefix}stores", merchant_id)
        pipe.hset(self.key(merchant_id, "state"), mapping={"state": state, "reason": reason,
                                                            "since": f"{now or time.time():.0f}"})
        pipe.execute()

    def state(self, merchant_id: int) -> dict:
        return _text(self.redis.hgetall(self.key(merchant_id, "state")))

    def is_uninstalled(self, merchant_id: int) -> bool:
        return _text(self.redis.hget(self.key(merchant_id, "state"), "state")) == UNINSTALLED

    def merchants(self) -> list[int]:
        return sorted(int(m) for m in self.redis.smembers(f"{self.prefix}stores"))

    # -- per-store settings ----------------------------------------------------------------
    def config(self, merchant_id: int) -> dict:
        raw = _text(self.redis.hgetall(self.key(merchant_id, "config")))
        return {name: kind(raw[name]) for name, kind in CONFIG_FIELDS.items() if name in raw}

    def set_config(self, merchant_id: int, **values) -> dict:
        unknown = set(values) - set(CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"unknown store setting(s): {', '.join(sorted(unknown))}")
        clean = {name: CONFIG_FIELDS[name](value) for name, value in values.items() if value is not None}
        if clean:
            self.redis.sadd(f"{self.prefix}stores", merchant_id)
            self.redis.hset(self.key(merchant_id, "config"), mapping=clean)
        return self.config(merchant_id)

    # -- counters --------------------------------------------------------------------------
    def count(self, merchant_id: int, name: str, amount: int = 1) -> None:
        self.redis.hincrby(self.key(merchant_id, "counters"), name, amount)

    def counters(self, merchant_id: int) -> dict:
        return {k: int(v) for k, v in _text(self.redis.hgetall(self.key(merchant_id, "counters"))).items()}

    # -- loyalty app missing ---------------------------------------------------------------
    def mark_loyalty_missing(self, merchant_id: int, seconds: int) -> None:
        self.redis.set(self.key(merchant_id, "no_loyalty"), "1", ex=seconds)

    def loyalty_missing(self, merchant_id: int) -> bool:
        return bool(self.redis.exists(self.key(merchant_id, "no_loyalty")))

    def clear_loyalty_missing(self, merchant_id: int) -> None:
        self.redis.delete(self.key(merchant_id, "no_loyalty"))

    def summary(self, merchant_id: int) -> dict:
        """What an operator sees for one store (never a token)."""
        return {
            "merchant_id": merchant_id,
            **{k: v for k, v in self.state(merchant_id).items()},
            "config": self.config(merchant_id),
            "counters": self.counters(merchant_id),
            "loyalty_app_missing": self.loyalty_missing(merchant_id),
            "blocked_until": _text(self.redis.get(self.key(merchant_id, "blocked_until"))),
        }


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value
