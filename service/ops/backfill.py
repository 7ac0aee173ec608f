"""A backfill's start and progress: what the admin API, the CLI and the workers' tasks call.
Plain Redis; the run itself (listing pages, reading customers, the resync) is workers/backfill.py's."""
from __future__ import annotations

import logging
import math
import uuid

log = logging.getLogger(__name__)

RUNNING, DONE, FAILED = "running", "done", "failed"


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def state(store, keys, merchant_id: int) -> dict:
    return {_text(k): _text(v) for k, v in store.hgetall(keys.store(merchant_id).backfill).items()}


def start(store, keys, merchant_id: int, now: float, reason: str) -> dict:
    """Begin a run, unless one is going. Returns the backfill's state."""
    k = keys.store(merchant_id)
    current = state(store, keys, merchant_id)
    if current.get("state") == RUNNING:
        return {**current, "started": "0"}
    pipe = store.pipeline()
    pipe.delete(k.backfill, k.backfill_seen, k.backfill_listing)
    pipe.hset(k.backfill, mapping={"state": RUNNING, "run": uuid.uuid4().hex[:12], "reason": reason,
                                   "started_at": f"{now:.0f}", "next_page": 1, "listing_done": 0, "listed": 0,
                                   "read": 0, "covered": 0, "failed": 0, "reminders": 0, "list_failures": 0})
    pipe.sadd(keys.backlog, merchant_id)  # beat's pump-backlog looks after it from now on
    pipe.sadd(keys.stores, merchant_id)
    pipe.execute()
    log.info("merchant=%s: backfill started (%s)", merchant_id, reason)
    return {**state(store, keys, merchant_id), "started": "1"}


def progress(store, keys, settings, config: dict, merchant_id: int, now: float | None = None) -> dict:
    """What an operator sees: the run's state, its counts, and the time left at the store's budget."""
    k = keys.store(merchant_id)
    current = state(store, keys, merchant_id)
    if not current:
        return {"state": "never"}
    number = {name: int(current.get(name, 0) or 0) for name in
              ("listed", "read", "covered", "failed", "reminders", "next_page", "total_pages", "total")}
    waiting, reading = int(store.zcard(k.backfill_pending)), int(store.scard(k.backfill_reading))
    pages_left = 0
    unlisted = 0
    if current.get("listing_done") != "1" and current.get("state") == RUNNING:
        if number["total_pages"]:
            pages_left = max(number["total_pages"] - number["next_page"] + 1, 0)
            unlisted = max(number["total"] - number["listed"], 0) if number["total"] else \
                pages_left * settings.salla_page_size
        else:
            pages_left, unlisted = 1, settings.salla_page_size  # nothing listed yet: at least a page
    # The store's budget: both limits, the tighter one paces us (requests a second).
    plan_limit = config.get("plan_limit", settings.plan_limit)
    rate = min(plan_limit / settings.plan_window_seconds, settings.customer_limit / settings.customer_window_seconds)
    requests_left = waiting + reading + unlisted + pages_left if current.get("state") == RUNNING else 0
    return {
        "state": current.get("state"),
        "reason": current.get("reason"),
        "started_at": int(current["started_at"]) if current.get("started_at") else None,
        "finished_at": int(current["finished_at"]) if current.get("finished_at") else None,
        "customers_listed": number["listed"],
        "customers_read": number["read"],
        "covered_by_events": number["covered"],
        "reads_failed": number["failed"],
        "reminders_scheduled": number["reminders"],
        "waiting": waiting,
        "reading": reading,
        "pages_listed": number["next_page"] - 1,
        "total_pages": number["total_pages"] or None,
        "estimated_seconds_left": math.ceil(requests_left / rate) if rate > 0 else None,
        "budget_requests_per_second": round(rate, 3),
        "error": current.get("error") or current.get("last_error"),
    }
