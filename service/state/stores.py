"""What we know about each store: its state, its settings and its counters, in Redis.

Keys are named in service/state/keys.py (every one under the store's hash tag): `state` (active |
needs_reauth | uninstalled, with the reason and since when), `config` (per-store settings),
`counters` (operator counters), `no-loyalty` (the loyalty app is missing: don't poll, TTL),
`blocked-until` (Salla said wait). `stores` lists every merchant id ever seen.
"""
from __future__ import annotations

import json
import math
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from service.state.keys import Keys

ACTIVE, NEEDS_REAUTH, UNINSTALLED = "active", "needs_reauth", "uninstalled"


class ConfigError(ValueError):
    """A per-store setting out of bounds or of the wrong type; the message names the field."""


def _whole(name: str, low: int, high: int):
    def parse(value) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{name} must be from {low} to {high}, got {number}")
        return number
    return parse


def _amount(name: str, low: float, high: float):
    def parse(value) -> float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number from {low} to {high}, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number from {low} to {high}, got {value!r}") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise ConfigError(f"{name} must be from {low} to {high}, got {value!r}")
        return number
    return parse


def _flag(name: str):
    def parse(value) -> int:
        word = value.strip().lower() if isinstance(value, str) else value  # "True", " true" (Salla's forms)
        if word in (True, 1, "1", "true", "yes", "on"):
            return 1
        if word in (False, 0, "0", "false", "no", "off"):
            return 0
        raise ConfigError(f"{name} must be 0 or 1 (true or false), got {value!r}")
    return parse


def _choice(name: str, allowed: tuple[str, ...]):
    def parse(value) -> str:
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value
    return parse


def _text_field(name: str, most: int):
    def parse(value) -> str:
        if not isinstance(value, str) or len(value.strip()) > most or any(ch in value for ch in "\r\n\x00"):
            raise ConfigError(f"{name} must be one line of text of at most {most} characters, got {value!r}")
        return value.strip()
    return parse


def _zone(name: str):
    def parse(value) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be an IANA time zone such as Asia/Riyadh, got {value!r}")
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{name} must be an IANA time zone such as Asia/Riyadh, got {value!r}") from None
        return value.strip()
    return parse


def _quiet(name: str):
    def parse(value) -> str:
        from service.domain.send_window import parse_quiet_hours
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be text like 21:00-09:00, or off, got {value!r}")
        try:
            window = parse_quiet_hours(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return "off" if window is None else str(window)
    return parse


def _items(value) -> list:
    """A list, or comma-separated text (the CLI, Salla's form fields are text)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _stages(name: str, low: int, high: int, most: int):
    def parse(value) -> str:
        hint = f"{name} must list 1 to {most} different whole numbers of days from {low} to {high}, e.g. 30,7,1"
        days = set()
        for item in _items(value):
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise ConfigError(f"{hint}; got {value!r}")
            try:
                number = int(item)
            except (TypeError, ValueError):
                raise ConfigError(f"{hint}; got {value!r}") from None
            if not low <= number <= high:
                raise ConfigError(f"{hint}; {number} is out of bounds")
            days.add(number)
        if not 1 <= len(days) <= most:
            raise ConfigError(f"{hint}; got {value!r}")
        return ",".join(str(d) for d in sorted(days, reverse=True))
    return parse


def _statuses(name: str, most: int, longest: int):
    def parse(value) -> str:
        items = _items(value) if value not in ("", None) else []
        if len(items) > most or not all(isinstance(i, str) and 0 < len(i.strip()) <= longest
                                        and not any(ch in i for ch in "\r\n\x00") for i in items):
            raise ConfigError(f"{name} must list at most {most} statuses of at most {longest} characters each, "
                              f"got {value!r}")
        return json.dumps(sorted({i.strip() for i in items}), ensure_ascii=False)
    return parse


# Per-store settings: name -> parser with bounds. Salla's plans allow 120, 360 or 720 requests
# a minute; anything past 10,000 is a typo, and 0 or less would stop the store for good.
CONFIG_FIELDS = {
    "plan_limit": _whole("plan_limit", 1, 10_000),
    "point_value_sar": _amount("point_value_sar", 0.0, 10_000.0),
    "paused": _flag("paused"),
    # The language of customers whose language Salla does not give (else REMINDER_LANGUAGE),
    # and the store's name as the shopper's messages say it.
    "language": _choice("language", ("ar", "en")),
    "store_name": _text_field("store_name", 80),
    # What the planner uses for this store (service/domain/store_policy.py); each falls back to the
    # environment's default (STORE_TIMEZONE, QUIET_HOURS, ...) while the store sets none.
    "timezone": _zone("timezone"),
    "quiet_hours": _quiet("quiet_hours"),
    # A stage further than a year out is a typo; more than five reminders per lot is spam.
    "stages_days": _stages("stages_days", 1, 365, 5),
    "min_points": _whole("min_points", 1, 1_000_000),
    "excluded_statuses": _statuses("excluded_statuses", 20, 40),
    # Customers who get no reminder, to measure what reminders cause (service/state/holdout.py); past
    # half the held-out group would be the larger one.
    "holdout_percent": _whole("holdout_percent", 0, 50),
}
_STORED_AS = {"plan_limit": int, "point_value_sar": float, "paused": int, "language": str, "store_name": str,
              "timezone": str, "quiet_hours": str, "stages_days": str, "min_points": int,
              "excluded_statuses": json.loads, "holdout_percent": int}
# The fields the merchant sets in Salla's app-settings form (README: "Per-store settings").
FORM_FIELDS = ("timezone", "quiet_hours", "stages_days", "min_points", "language", "excluded_statuses",
               "holdout_percent")


def form_value(value):
    """A value of Salla's app-settings form as the value it carries: Salla sends some values
    list-shaped (`["ar"]`, `[""]`) and yes/no as text (`"true"`) as well as plain
    (shared/salla/REFERENCE.md, Pitfalls). A one-item list is its item; the field's parser
    then reads text and numbers alike. A longer list stays a list (stages_days and
    excluded_statuses take one; the others refuse it, naming the field)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


class StoreRegistry:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.keys = Keys(prefix)

    # -- state -----------------------------------------------------------------------------
    def set_state(self, merchant_id: int, state: str, reason: str = "", now: float | None = None) -> None:
        # Not a transaction: `stores` (an index of merchant ids, in its own slot) and the store's
        # state are in two cluster slots. Listing the store first is harmless if the state write fails.
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(self.keys.stores, merchant_id)
        pipe.hset(self.keys.store(merchant_id).state, mapping={"state": state, "reason": reason,
                                                                "since": f"{now or time.time():.0f}"})
        pipe.execute()

    def state(self, merchant_id: int) -> dict:
        return _text(self.redis.hgetall(self.keys.store(merchant_id).state))

    def is_uninstalled(self, merchant_id: int) -> bool:
        return _text(self.redis.hget(self.keys.store(merchant_id).state, "state")) == UNINSTALLED

    def merchants(self) -> list[int]:
        return sorted(int(m) for m in self.redis.smembers(self.keys.stores))

    def uninstalled_not_erased(self, before: float) -> list[int]:
        """Stores uninstalled before `before` whose data was not erased since (workers/lifecycle.py
        notes each erasure in the state as `erased_for`: the `since` of the uninstall it erased).
        One HMGET per store, pipelined: cheap when there is nothing to do."""
        merchants, found = self.merchants(), []
        for start in range(0, len(merchants), 1000):
            chunk = merchants[start:start + 1000]
            pipe = self.redis.pipeline(transaction=False)  # one slot per store on a cluster
            for merchant_id in chunk:
                pipe.hmget(self.keys.store(merchant_id).state, "state", "since", "erased_for")
            for merchant_id, (state, since, erased_for) in zip(chunk, pipe.execute()):
                since, erased_for = _text(since), _text(erased_for)
                if _text(state) == UNINSTALLED and erased_for != since and float(since or 0) < before:
                    found.append(merchant_id)
        return found

    def note_erased(self, merchant_id: int, since: str) -> None:
        """The store's data was erased after its uninstall of `since` (its state's `since`)."""
        self.redis.hset(self.keys.store(merchant_id).state, "erased_for", since)

    # -- per-store settings ----------------------------------------------------------------
    def config(self, merchant_id: int) -> dict:
        raw = _text(self.redis.hgetall(self.keys.store(merchant_id).config))
        return {name: kind(raw[name]) for name, kind in _STORED_AS.items() if name in raw}

    def uninstalled_and_config(self, merchant_id: int) -> tuple[bool, dict]:
        """is_uninstalled and config in one round trip (one slot: the store's keys), for each
        delivery attempt, where a round trip was a visible share of its time (bench/workers.py)."""
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.state, "state")
        pipe.hgetall(k.config)
        state, raw = (_text(value) for value in pipe.execute())
        return state == UNINSTALLED, {name: kind(raw[name]) for name, kind in _STORED_AS.items() if name in raw}

    def set_config(self, merchant_id: int, /, **values) -> dict:
        """Check every value first (ConfigError names the field), then store them together.
        `merchant_id` is positional-only: a setting sent as "merchant_id" is an unknown one."""
        unknown = set(values) - set(CONFIG_FIELDS)
        if unknown:
            raise ConfigError(f"unknown store setting(s): {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(CONFIG_FIELDS)})")
        clean = {name: CONFIG_FIELDS[name](value) for name, value in values.items() if value is not None}
        if clean:
            pipe = self.redis.pipeline(transaction=False)  # two slots, as in set_state
            pipe.sadd(self.keys.stores, merchant_id)
            pipe.hset(self.keys.store(merchant_id).config, mapping=clean)
            pipe.execute()
        return self.config(merchant_id)

    def apply_form(self, merchant_id: int, values: dict, at: float, source: str) -> dict:
        """The merchant's app-settings form (Salla's app.settings.updated, or its App API): each
        field checked on its own. A valid value is kept, an empty one goes back to the default,
        an invalid one is refused and kept out (the store keeps its previous value) and listed
        in `settings_rejected` with the reason, for the operator and the merchant's support.
        Keys that are not form fields are ignored. An older form than the last one applied
        (a delayed retry) changes nothing."""
        k = self.keys.store(merchant_id)
        last = self.redis.hget(k.app_settings, "at")
        if last is not None and float(last) > at:
            return {"applied": [], "rejected": {}, "ignored": "older than the settings already applied"}
        clean, reset, rejected = {}, [], {}
        for name in FORM_FIELDS:
            if name not in values:
                continue
            value = form_value(values[name])
            if value is None or value == "" or value == []:
                reset.append(name)
                continue
            if isinstance(value, str) and name == "min_points" and value.strip().isdigit():
                value = int(value.strip())
            try:
                clean[name] = CONFIG_FIELDS[name](value)
            except ConfigError as exc:
                rejected[name] = str(exc)
        pipe = self.redis.pipeline()
        pipe.sadd(self.keys.stores, merchant_id)
        if clean:
            pipe.hset(k.config, mapping=clean)
        if reset:
            pipe.hdel(k.config, *reset)
        pipe.delete(k.app_settings)
        pipe.hset(k.app_settings, mapping={"at": f"{at:.3f}", "source": source,
                                           "rejected": json.dumps(rejected, ensure_ascii=False)})
        pipe.execute()
        return {"applied": sorted(clean), "reset": sorted(reset), "rejected": rejected}

    def settings_rejected(self, merchant_id: int) -> dict:
        raw = _text(self.redis.hget(self.keys.store(merchant_id).app_settings, "rejected"))
        return json.loads(raw) if raw else {}

    def note_settings_error(self, merchant_id: int, error: str) -> None:
        """Salla's App API could not give the store's settings (the defaults stay)."""
        self.redis.hset(self.keys.store(merchant_id).app_settings, "error", error[:300])

    # -- counters --------------------------------------------------------------------------
    def count(self, merchant_id: int, name: str, amount: int = 1) -> None:
        """Count, and list the store among those seen (single-store mode has no authorize)."""
        if amount:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hincrby(self.keys.store(merchant_id).counters, name, amount)
            pipe.sadd(self.keys.stores, merchant_id)
            pipe.execute()

    def counters(self, merchant_id: int) -> dict:
        return {k: int(v) for k, v in _text(self.redis.hgetall(self.keys.store(merchant_id).counters)).items()}

    # -- loyalty app missing ---------------------------------------------------------------
    def mark_loyalty_missing(self, merchant_id: int, seconds: int) -> None:
        self.redis.set(self.keys.store(merchant_id).no_loyalty, "1", ex=seconds)

    def loyalty_missing(self, merchant_id: int) -> bool:
        return bool(self.redis.exists(self.keys.store(merchant_id).no_loyalty))

    def clear_loyalty_missing(self, merchant_id: int) -> None:
        self.redis.delete(self.keys.store(merchant_id).no_loyalty)

    def summary(self, merchant_id: int) -> dict:
        """What an operator sees for one store (never a token)."""
        k = self.keys.store(merchant_id)
        return {
            "merchant_id": merchant_id,
            **self.state(merchant_id),
            "config": self.config(merchant_id),
            "counters": self.counters(merchant_id),
            "loyalty_app_missing": self.loyalty_missing(merchant_id),
            "blocked_until": _text(self.redis.get(k.blocked_until)),
            # scored by when each record expires: one past it is gone (service/state/ledger.py)
            "dead_letters": int(self.redis.zcount(k.dead, f"{time.time()}", "+inf")),
            "settings_rejected": self.settings_rejected(merchant_id),
            "settings_error": _text(self.redis.hget(k.app_settings, "error")),
        }


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value
