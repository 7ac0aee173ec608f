"""One customer's personal data (Saudi PDPL): everything we hold, as JSON; and its erasure.

export  the profile (name, mobile, e-mail, language, opt-out), the last read's lots, the lot
        marks, the reminders in the ledger (with the message that went out), the due-set
        entries, and where the customer waits in the store's queues
forget  deletes all of it: those keys, the ledger records and their provider message ids,
        dead letters, due-set entries, queue entries, read times. What stays is not personal:
        the store's outcome statistics and delivery counts (numbers), and a tombstone in the
        store's `erasures` list (when, how many keys) that names nobody. An opted-out
        customer's suppression entries stay too (keyed hashes, service/state/profiles.py): forgetting
        a shopper must not undo their opt-out when Salla sends them again.

Plain Redis code over the store's keys (service/state/keys.py), used by the admin API and the CLI.
"""
from __future__ import annotations

import json

import redis

from service.state.keys import Keys
from service.state.stores import StoreRegistry
from service.state.due_set import DueSet
from service.state.ledger import Ledger, full_reminder
from service.state.profiles import Profiles
from service.state.last_read import parse as parse_last_read, profile_fields

ERASURES_KEPT = 1000


class UnknownCustomer(LookupError):
    """Nothing is held for this customer in this store."""


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, (list, set, tuple)):
        return [_text(v) for v in value]
    return value


def _ledger_records(store: redis.Redis, keys: Keys, merchant_id: int, customer_id: int) -> dict[str, dict]:
    """reminder key -> record hash, of this customer. A SCAN of the store's ledger: operators
    ask for this rarely, and an index would be one more personal key to keep in step."""
    base = keys.store(merchant_id).reminder("")
    found = {}
    for key in store.scan_iter(match=base + "*", count=1000):
        if _text(store.hget(key, "customer_id")) == str(customer_id):
            record = _text(store.hgetall(key))
            if "updated_at" not in record and "sent_at" in record:  # settled as sent (service/state/ledger.py)
                record["updated_at"] = record["sent_at"]
            found[_text(key)] = record
    return found


def _message_ids(store: redis.Redis, keys: Keys, merchant_id: int, reminder_ids: set[str]) -> list[str]:
    if not reminder_ids:
        return []
    base = keys.store(merchant_id).provider_message("", "")[:-1]  # ...msgid:
    return [_text(key) for key in store.scan_iter(match=base + "*", count=1000)
            if _text(store.get(key)) in reminder_ids]


def export(store: redis.Redis, prefix: str, merchant_id: int, customer_id: int, due_set_shards: int = 1) -> dict:
    keys = Keys(prefix)
    k = keys.store(merchant_id)
    c = str(customer_id)
    raw_profile = store.hgetall(k.profile(customer_id))
    profile = profile_fields(raw_profile)  # the last read kept beside them is `lots` below
    lots_raw = store.get(k.lots(customer_id))
    marks = _text(store.hgetall(k.marks(customer_id)))
    recheck = sorted(_text(store.smembers(k.recheck(customer_id))))
    records = _ledger_records(store, keys, merchant_id, customer_id)
    from service.domain.loyalty import _lot_record  # the lots' stored shape lives there
    last_read = parse_last_read(raw_profile, lots_raw)
    ledger, reminders = Ledger(store, prefix), []
    for key, record in sorted(records.items()):
        # A sent reminder keeps no body: rendered again, as delivery would (service/state/ledger.py).
        found = ledger.get(merchant_id, key.rsplit(":", 1)[-1])
        body = full_reminder(found, Profiles(store, prefix).load(merchant_id, customer_id),
                             last_read[1] if last_read else [], StoreRegistry(store, prefix).config(merchant_id)
                             .get("store_name", "")) if found else None
        record.pop("body", None)
        reminders.append({"reminder_id": key.rsplit(":", 1)[-1], "merchant_id": str(merchant_id), **record,
                          "body": body})
    due = DueSet(store, prefix, shards=due_set_shards).customer_entries(merchant_id, customer_id)
    pipe = store.pipeline()
    pipe.zscore(k.pending, c)
    pipe.zscore(k.inflight, c)
    pipe.zscore(k.backfill_pending, c)
    pipe.zscore(k.read_at, c)
    pipe.hget(k.attempts, c)
    pipe.hget(k.pages, c)
    pending, inflight, backfill_pending, read_at, attempts, pages = pipe.execute()
    queues = {name: value for name, value in (("pending_read_at", pending), ("read_lease_until", inflight),
                                              ("backfill_queued_at", backfill_pending), ("last_read_at", read_at),
                                              ("failed_read_attempts", _text(attempts)),
                                              ("history_pages", _text(pages))) if value is not None}
    if not (profile or last_read or marks or recheck or reminders or due or queues):
        raise UnknownCustomer(f"nothing is held for customer {customer_id} of merchant {merchant_id}")
    return {
        "merchant_id": merchant_id,
        "customer_id": customer_id,
        "profile": profile or None,
        "lots": {"read_at": last_read[0], "lots": [_lot_record(lot) for lot in last_read[1]]} if last_read else None,
        "marks": marks,
        "recheck_stages": recheck,
        "reminders": reminders,
        "due_entries": due,
        "queues": queues,
    }


def forget(store: redis.Redis, prefix: str, merchant_id: int, customer_id: int, now: float,
           due_set_shards: int = 1, *, secrets: tuple[str, ...], dry_run: bool = False) -> dict:
    """Erase the customer's data; raises UnknownCustomer when there is none. Returns counts.
    `secrets`: TOKEN_ENCRYPTION_KEY's keys, for the suppression entries of an opted-out customer.
    dry_run: the same counts, nothing erased or written."""
    export(store, prefix, merchant_id, customer_id)  # raises when nothing is held
    if dry_run:
        return _forget_preview(store, prefix, merchant_id, customer_id, due_set_shards)
    Profiles(store, prefix, secrets=secrets).keep_suppressed(merchant_id, customer_id, now)
    keys = Keys(prefix)
    k = keys.store(merchant_id)
    c = str(customer_id)
    records = _ledger_records(store, keys, merchant_id, customer_id)
    reminder_ids = {key.rsplit(":", 1)[-1] for key in records}
    message_keys = _message_ids(store, keys, merchant_id, reminder_ids)
    due_removed = DueSet(store, prefix, shards=due_set_shards).cancel_customer(merchant_id, customer_id)
    doomed = [key for key in (*k.customer_keys(customer_id), *records, *message_keys) if store.exists(key)]
    pipe = store.pipeline()
    if doomed:
        pipe.delete(*doomed)
    if reminder_ids:
        pipe.zrem(k.dead, *reminder_ids)
    for queue in (k.pending, k.inflight, k.backfill_pending, k.read_at):
        pipe.zrem(queue, c)
    pipe.srem(k.backfill_seen, c)
    pipe.srem(k.backfill_reading, c)
    pipe.hdel(k.attempts, c)
    pipe.hdel(k.pages, c)
    counts = {"keys_deleted": len(doomed), "ledger_records": len(records), "due_entries": due_removed}
    # The tombstone names nobody: when, and how much went.
    pipe.lpush(k.erasures, json.dumps({"at": int(now), **counts}))
    pipe.ltrim(k.erasures, 0, ERASURES_KEPT - 1)
    pipe.hincrby(k.counters, "customers_forgotten", 1)
    pipe.execute()
    return {"merchant_id": merchant_id, "customer_id": customer_id, "forgotten": True, **counts}


def _forget_preview(store: redis.Redis, prefix: str, merchant_id: int, customer_id: int, due_set_shards: int) -> dict:
    keys = Keys(prefix)
    records = _ledger_records(store, keys, merchant_id, customer_id)
    message_keys = _message_ids(store, keys, merchant_id, {key.rsplit(":", 1)[-1] for key in records})
    held = [key for key in (*keys.store(merchant_id).customer_keys(customer_id), *records, *message_keys)
            if store.exists(key)]
    due = DueSet(store, prefix, shards=due_set_shards).customer_entries(merchant_id, customer_id)
    return {"merchant_id": merchant_id, "customer_id": customer_id, "forgotten": False, "dry_run": True,
            "keys_deleted": len(held), "ledger_records": len(records), "due_entries": len(due)}


def keep_opt_outs(store, profiles, keys, merchant_id: int, profile_keys, now: float) -> int:
    """A suppression entry for every customer among `profile_keys` (a store's profile keys) whose
    profile says they opted out; how many. An opt-out made today writes its entry at once
    (service/state/profiles.py); one recorded only in the profile, before entries existed, would
    be lost with the profile (uninstall, forget, DATA_RETENTION_DAYS), and the customer reminded."""
    head = keys.store(merchant_id).profile("")
    customers = [int(key[len(head):]) for key in (_text(k) for k in profile_keys)
                 if key.startswith(head) and key[len(head):].isdigit()]
    kept = 0
    for start in range(0, len(customers), 500):
        batch = customers[start:start + 500]
        pipe = store.pipeline(transaction=False)
        for customer_id in batch:
            pipe.hmget(keys.store(merchant_id).profile(customer_id), "unsubscribed_at", "notifications_enabled")
        for customer_id, (unsubscribed_at, enabled) in zip(batch, pipe.execute()):
            if unsubscribed_at or enabled in ("0", b"0"):
                kept += profiles.keep_suppressed(merchant_id, customer_id, now)
    return kept


# Set in the store's `state` hash once every opt-out its profiles recorded has its entry.
OPT_OUTS_KEPT = "opt_outs_suppressed_at"


def keep_recorded_opt_outs(store, profiles, keys, merchant_id: int, now: float) -> int | None:
    """Once per store (beat's hourly resync): the suppression entries of the opt-outs its
    profiles recorded before entries existed. None when it was done already."""
    k = keys.store(merchant_id)
    if store.hget(k.state, OPT_OUTS_KEPT):
        return None
    kept = keep_opt_outs(store, profiles, keys, merchant_id,
                         store.scan_iter(match=k.profile("*"), count=1000), now)
    store.hset(k.state, OPT_OUTS_KEPT, f"{now:.0f}")
    return kept
