"""A store's data from install to erasure.

forget_store  after app.uninstalled: every key of the store goes (tokens, budget windows,
              queues, profiles, lots, marks, the ledger), by construction: all of them share
              the store's key pattern (service/keys.py). What an operator needs to see what
              happened stays: state, settings, counters, outcome statistics.
"""
from __future__ import annotations

import logging

from service.tokens import token_lock
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def forget_store(rt: Runtime, merchant_id: int, uninstalled_at: float | None = None) -> dict:
    """Erase a store's data, unless it was installed again since (then there is nothing to do)."""
    k = rt.keys.store(merchant_id)
    with token_lock(rt.store, rt.settings.redis_key_prefix, merchant_id):
        last_app_event = rt.store.get(k.app_event_at)
        reinstalled = uninstalled_at is not None and last_app_event is not None and float(last_app_event) > uninstalled_at
        if not rt.registry.is_uninstalled(merchant_id) or reinstalled:
            log.info("merchant=%s was installed again since its uninstall: its data stays", merchant_id)
            return {"skipped": 1}
        dropped = {"dropped_syncs": rt.budget.drop_store(merchant_id),
                   "dropped_reminders": rt.due.cancel_store(merchant_id)}
        kept = set(k.kept_after_uninstall) | {k.token_lock}
        doomed = [key for key in rt.store.scan_iter(match=k.pattern, count=1000)
                  if (key.decode() if isinstance(key, bytes) else key) not in kept]
        for start in range(0, len(doomed), 500):
            rt.store.delete(*doomed[start:start + 500])
        dropped["keys_erased"] = len(doomed)
    rt.store.srem(rt.keys.backlog, merchant_id)
    for name, amount in dropped.items():
        rt.registry.count(merchant_id, name, amount)
    log.info("merchant=%s uninstalled: its data is erased %s", merchant_id, dropped)
    return dropped
