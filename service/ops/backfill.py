"""A backfill's start and progress: what the admin API, the CLI and the workers' tasks call.
Plain Redis; the run itself (listing pages, reading customers, the resync) is workers/backfill.py's.

Install storms: at most BACKFILL_MAX_STORES stores backfill at once, fleet-wide, each with one
slot (`{backfill}:running`, scored by the slot's lease); the others wait `queued` in install
order (`{backfill}:queue`) and show their place in `backfill-status` (`fleet`, `progress`).
`start` queues a run and `_admit` hands free slots to the first stores queued, one each; the
parts that need a worker's Runtime (`admit`, which pumps the stores admitted, `release`, and
the lease's renewal by every pump) are workers/backfill.py's.
"""
from __future__ import annotations

import logging
import math
import uuid

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
DEFAULT_MAX_STORES = 100  # BACKFILL_MAX_STORES's default (service/config/settings.py)
# A slot nobody renewed for this long goes to the next store: 20 of beat's 15 s pump-backlog
# ticks, so a slow tick or a worker restart never costs a store its slot.
SLOT_LEASE_SECONDS = 300

# KEYS: running, queue. ARGV: now, max stores, lease seconds, [a store to queue]. Leases that ran
# out go to the back of the queue; then free slots go to the first stores queued, one each.
# Returns {stores admitted, stores whose lease ran out}.
_ADMIT = """
local running, queue = KEYS[1], KEYS[2]
local now, most, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] and not redis.call('ZSCORE', running, ARGV[4]) then
  redis.call('ZADD', queue, 'NX', now, ARGV[4])
end
local expired = redis.call('ZRANGEBYSCORE', running, '-inf', now)
for _, store in ipairs(expired) do
  redis.call('ZREM', running, store)
  redis.call('ZADD', queue, now, store)
end
local admitted = {}
local free = most - redis.call('ZCARD', running)
if free > 0 then
  for _, store in ipairs(redis.call('ZRANGE', queue, 0, free - 1)) do
    redis.call('ZREM', queue, store)
    redis.call('ZADD', running, now + lease, store)
    table.insert(admitted, store)
  end
end
return {admitted, expired}
"""


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def state(store, keys, merchant_id: int) -> dict:
    return {_text(k): _text(v) for k, v in store.hgetall(keys.store(merchant_id).backfill).items()}


def start(store, keys, merchant_id: int, now: float, reason: str, max_stores: int | None = None) -> dict:
    """Begin a run, unless one is going or waiting: it runs now if one of the `max_stores`
    (BACKFILL_MAX_STORES) slots is free, else it waits `queued` for one. Returns its state."""
    k = keys.store(merchant_id)
    current = state(store, keys, merchant_id)
    if current.get("state") in (RUNNING, QUEUED):
        _admit(store, keys, now, max_stores or DEFAULT_MAX_STORES, merchant_id)  # keeps its place
        return {**state(store, keys, merchant_id), "started": "0"}
    pipe = store.pipeline()
    pipe.delete(k.backfill, k.backfill_seen, k.backfill_listing)
    pipe.hset(k.backfill, mapping={"state": QUEUED, "run": uuid.uuid4().hex[:12], "reason": reason,
                                   "queued_at": f"{now:.0f}", "next_page": 1, "listing_done": 0, "listed": 0,
                                   "read": 0, "covered": 0, "failed": 0, "reminders": 0, "list_failures": 0})
    pipe.sadd(keys.stores, merchant_id)
    pipe.execute()
    _admit(store, keys, now, max_stores or DEFAULT_MAX_STORES, merchant_id)
    current = state(store, keys, merchant_id)
    log.info("merchant=%s: backfill %s (%s)", merchant_id,
             "started" if current.get("state") == RUNNING else "queued for a slot", reason)
    return {**current, "started": "1"}


def _admit(store, keys, now: float, max_stores: int, queue_first: int | None = None) -> list[int]:
    """Free slots to the first stores queued (after `queue_first` joins the queue, unless it
    holds a slot already); their runs begin. Returns the stores admitted whose runs began."""
    began = []
    for _ in range(10):  # a store admitted with no run waiting frees its slot again at once
        admitted, _expired = store.eval(_ADMIT, 2, keys.backfill_running, keys.backfill_queue, f"{now:.3f}",
                                        max_stores, SLOT_LEASE_SECONDS,
                                        *([] if queue_first is None else [queue_first]))
        queue_first, stale = None, []
        for merchant_id in (int(m) for m in admitted):
            k = keys.store(merchant_id)
            current = _text(store.hget(k.backfill, "state"))
            if current == QUEUED:
                pipe = store.pipeline()
                pipe.hset(k.backfill, mapping={"state": RUNNING, "started_at": f"{now:.0f}"})
                pipe.execute()
                began.append(merchant_id)
            elif current == RUNNING:
                began.append(merchant_id)  # its lease had run out and it came round again
            else:
                stale.append(merchant_id)  # its run ended (or its store was erased) meanwhile
        if not stale:
            break
        store.zrem(keys.backfill_running, *stale)
    for merchant_id in began:
        store.sadd(keys.backlog, merchant_id)  # beat's pump-backlog looks after it from now on
    return began


def fleet(store, keys, settings, limit: int = 100) -> dict:
    """Every store backfilling now and the first `limit` waiting, in the order they will start."""
    pipe = store.pipeline(transaction=False)
    pipe.zrange(keys.backfill_running, 0, -1)
    pipe.zrange(keys.backfill_queue, 0, limit - 1, withscores=True)
    pipe.zcard(keys.backfill_queue)
    running, queued, total = pipe.execute()
    return {"max_stores": settings.backfill_max_stores,
            "running": sorted(int(m) for m in running),
            "queued": [{"merchant_id": int(m), "position": i + 1, "queued_at": int(at)}
                       for i, (m, at) in enumerate(queued)],
            "queued_total": int(total)}


def progress(store, keys, settings, config: dict, merchant_id: int, now: float | None = None) -> dict:
    """What an operator sees: the run's state, its counts, and the time left at the store's budget."""
    k = keys.store(merchant_id)
    current = state(store, keys, merchant_id)
    if not current:
        return {"state": "never"}
    position = None
    if current.get("state") == QUEUED:
        rank = store.zrank(keys.backfill_queue, merchant_id)
        position = None if rank is None else int(rank) + 1
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
        "queued_at": int(current["queued_at"]) if current.get("queued_at") else None,
        "queue_position": position,  # while queued: 1 is the next store to get a slot
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
        "estimated_seconds_left": math.ceil(requests_left / rate) if rate > 0 and position is None else None,
        "budget_requests_per_second": round(rate, 3),
        "error": current.get("error") or current.get("last_error"),
    }
