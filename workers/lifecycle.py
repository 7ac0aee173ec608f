"""A store's data from install to erasure.

forget_store  after app.uninstalled: every key of the store goes (tokens, budget windows,
              queues, profiles, lots, marks, the ledger), by construction: all of them share
              the store's key pattern (service/state/keys.py). What an operator needs to see what
              happened stays: state, settings, counters, outcome statistics.
erase_uninstalled  beat's safety net: forget_store is published once, by the web, at
              app.uninstalled; with the broker down through Salla's retries it never runs, and
              the store's personal data would stay for DATA_RETENTION_DAYS. Every few minutes
              beat erases each store still uninstalled whose erasure has not completed.
"""
from __future__ import annotations

import logging

from service.state.stores import UNINSTALLED
from service.state.tokens import token_lock
from service.ops.personal_data import keep_opt_outs
from service.ops.runtime import Runtime
from workers import backfill

log = logging.getLogger(__name__)


def forget_store(rt: Runtime, merchant_id: int, uninstalled_at: float | None = None) -> dict:
    """Erase a store's data, unless it was installed again since (then there is nothing to do)."""
    k = rt.keys.store(merchant_id)
    with token_lock(rt.store, rt.settings.redis_key_prefix, merchant_id):
        last_app_event = rt.store.get(k.app_event_at)
        reinstalled = uninstalled_at is not None and last_app_event is not None and float(last_app_event) > uninstalled_at
        state = rt.registry.state(merchant_id)
        if state.get("state") != UNINSTALLED or reinstalled:
            log.info("merchant=%s was installed again since its uninstall: its data stays", merchant_id)
            return {"skipped": 1}
        dropped = {"dropped_syncs": rt.budget.drop_store(merchant_id),
                   "dropped_reminders": rt.due.cancel_store(merchant_id)}
        kept = set(k.kept_after_uninstall) | {k.token_lock}
        doomed = [key.decode() if isinstance(key, bytes) else key
                  for key in rt.store.scan_iter(match=k.pattern, count=1000)]
        doomed = [key for key in doomed if key not in kept]
        dropped["opt_outs_kept"] = keep_opt_outs(rt.store, rt.profiles, rt.keys, merchant_id, doomed, rt.clock())
        for start in range(0, len(doomed), 500):
            rt.store.delete(*doomed[start:start + 500])
        dropped["keys_erased"] = len(doomed)
        rt.registry.note_erased(merchant_id, state.get("since", ""))  # beat's erase_uninstalled looks no more
    rt.store.srem(rt.keys.backlog, merchant_id)
    backfill.release(rt, merchant_id)  # its backfill slot (or place in line) goes to the next store
    for name, amount in dropped.items():
        rt.registry.count(merchant_id, name, amount)
    log.info("merchant=%s uninstalled: its data is erased %s", merchant_id, dropped)
    return dropped


# The web publishes forget_store at app.uninstalled, and a worker runs it within seconds: beat
# leaves a store that long to it. Each run erases a few stores at most, so that it stays short.
ERASE_AFTER_SECONDS = 300
ERASE_PER_RUN = 20


def erase_uninstalled(rt: Runtime, now: float) -> list[int]:
    """Erase the stores still uninstalled whose erasure never ran (idempotent); their ids."""
    found = rt.registry.uninstalled_not_erased(now - ERASE_AFTER_SECONDS)[:ERASE_PER_RUN]
    for merchant_id in found:
        log.warning("merchant=%s uninstalled with its data left (its erasure never ran): erasing it now",
                    merchant_id)
        forget_store(rt, merchant_id)
    return found
