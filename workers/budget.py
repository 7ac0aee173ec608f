"""Salla's request budget per store, and the per-store queue of customers waiting to be read.

Salla limits each store twice: the plan limit (120 requests a minute on the smallest plan)
and 500 requests per 10 minutes on customer endpoints, where the loyalty endpoint lives.
Both are kept here as sliding-window logs (a sorted set of request times per store and
limit): at most N requests in ANY window of the given length, which also keeps us inside
whatever window alignment Salla uses. Salla's own answers override us: a 429's Retry-After,
or X-RateLimit-Remaining 0 until X-RateLimit-Reset, block the store until then.

Customers wait in `sync:{m}:pending`, a sorted set scored by the earliest time they may be
read. ZADD NX is the coalescing: 50 events for one customer are one member, one read. The
dispatch script takes as many customers as the budget allows right now, spends one slot
per page we expect their history to have, and marks each one "in flight" so that an event
arriving during the read waits for it and then causes exactly one more read. All of that in
one Lua script, so every worker process shares one budget without races.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

# Shared by both scripts: the two sliding-window logs of a store (plan, customer endpoints).
_WINDOWS = """
local function trim(plan, plan_window, cust, cust_window, now)
  redis.call('ZREMRANGEBYSCORE', plan, '-inf', now - plan_window)
  redis.call('ZREMRANGEBYSCORE', cust, '-inf', now - cust_window)
end

local function available(plan, plan_limit, cust, cust_limit)
  return math.min(plan_limit - redis.call('ZCARD', plan), cust_limit - redis.call('ZCARD', cust))
end

local function spend(plan, cust, now, tag, need)
  for i = 1, need do
    local member = string.format('%.6f:%s:%d', now, tag, i)
    redis.call('ZADD', plan, now, member)
    redis.call('ZADD', cust, now, member)
  end
end
"""

_DISPATCH = _WINDOWS + """
local plan, cust, blocked, pending, pages, backlog = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local inflight_prefix = ARGV[1]
local now = tonumber(ARGV[2])
local plan_limit, plan_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local cust_limit, cust_window = tonumber(ARGV[5]), tonumber(ARGV[6])
local max_batch, inflight_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local merchant = ARGV[9]

trim(plan, plan_window, cust, cust_window, now)

local function slot_wait(key, limit, window, need)
  local used = redis.call('ZCARD', key)
  if used + need <= limit then return 0 end
  -- `need` slots are free once the (used + need - limit) oldest requests left the window
  local index = used + need - limit - 1
  local oldest = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end

local taken = {}
local blocked_until = tonumber(redis.call('GET', blocked) or '0')
local skipped = 0
local waiting_need = 1
if blocked_until <= now then
  local avail = available(plan, plan_limit, cust, cust_limit)
  if avail > 0 then
    local due = redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'LIMIT', 0, max_batch)
    for _, customer in ipairs(due) do
      if redis.call('EXISTS', inflight_prefix .. customer) == 1 then
        skipped = skipped + 1
      else
        -- never more than a whole window: a longer history is read across windows
        local need = math.min(tonumber(redis.call('HGET', pages, customer) or '1'), plan_limit, cust_limit)
        if need > avail then
          waiting_need = need
          break
        end
        avail = avail - need
        redis.call('ZREM', pending, customer)
        redis.call('SET', inflight_prefix .. customer, '1', 'EX', inflight_ttl)
        spend(plan, cust, now, customer, need)
        table.insert(taken, customer)
        table.insert(taken, tostring(need))
      end
    end
  end
end

local left = redis.call('ZCARD', pending)
if left == 0 then
  redis.call('SREM', backlog, merchant)
  return {taken, '-1'}
end
redis.call('SADD', backlog, merchant)
local wait = math.max(slot_wait(plan, plan_limit, plan_window, waiting_need),
                      slot_wait(cust, cust_limit, cust_window, waiting_need), blocked_until - now)
local first = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
wait = math.max(wait, tonumber(first[2]) - now)
if wait <= 0 then
  -- due customers are waiting only for reads in flight: look again shortly
  wait = (skipped > 0) and 1 or 0
end
return {taken, tostring(wait)}
"""

_ACQUIRE = _WINDOWS + """
local plan, cust, blocked = KEYS[1], KEYS[2], KEYS[3]
local now, need = tonumber(ARGV[1]), tonumber(ARGV[2])
local plan_limit, plan_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local cust_limit, cust_window = tonumber(ARGV[5]), tonumber(ARGV[6])
trim(plan, plan_window, cust, cust_window, now)
if tonumber(redis.call('GET', blocked) or '0') > now then return 0 end
if available(plan, plan_limit, cust, cust_limit) < need then return 0 end
spend(plan, cust, now, ARGV[7], need)
return 1
"""

_BLOCK = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ = tonumber(ARGV[1])
if until_ > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', math.max(1, math.ceil(until_ - tonumber(ARGV[2])) + 60))
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Limits:
    plan_limit: int
    plan_window: int
    customer_limit: int
    customer_window: int


@dataclass(frozen=True)
class Dispatch:
    customers: list[tuple[int, int]]  # (customer_id, pages paid for)
    wait: float | None  # seconds until dispatch can take more; None: nothing pending


class Budget:
    # In flight = dispatched and not yet done. Long enough for a task to wait in a busy
    # queue; if a task is lost, the customer is free again after this.
    INFLIGHT_SECONDS = 900
    MAX_BATCH = 500

    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.prefix = prefix
        self._dispatch = store.register_script(_DISPATCH)
        self._acquire = store.register_script(_ACQUIRE)
        self._block = store.register_script(_BLOCK)

    # -- keys ------------------------------------------------------------------------------
    def _keys(self, merchant_id: int) -> list[str]:
        p = self.prefix
        return [f"{p}budget:{merchant_id}:plan", f"{p}budget:{merchant_id}:customer",
                f"{p}store:{merchant_id}:blocked_until"]

    def pending_key(self, merchant_id: int) -> str:
        return f"{self.prefix}sync:{merchant_id}:pending"

    def _pages_key(self, merchant_id: int) -> str:
        return f"{self.prefix}sync:{merchant_id}:pages"

    def _inflight_key(self, merchant_id: int, customer_id: int | str) -> str:
        return f"{self.prefix}sync:{merchant_id}:inflight:{customer_id}"

    @property
    def backlog_key(self) -> str:
        return f"{self.prefix}sync:backlog"

    # -- the pending queue -----------------------------------------------------------------
    def enqueue(self, merchant_id: int, customer_id: int, not_before: float) -> bool:
        """Add a customer to the store's queue. False: already waiting (coalesced)."""
        pipe = self.redis.pipeline()
        pipe.zadd(self.pending_key(merchant_id), {str(customer_id): not_before}, nx=True)
        pipe.sadd(self.backlog_key, merchant_id)
        added, _ = pipe.execute()
        return bool(added)

    def retry_later(self, merchant_id: int, customer_id: int, not_before: float, pages: int | None = None) -> None:
        """Put a customer back (transient failure, 429, budget ran out mid-read)."""
        pipe = self.redis.pipeline()
        if pages:
            pipe.hset(self._pages_key(merchant_id), str(customer_id), pages)
        pipe.zadd(self.pending_key(merchant_id), {str(customer_id): not_before})
        pipe.sadd(self.backlog_key, merchant_id)
        pipe.delete(self._inflight_key(merchant_id, customer_id))
        pipe.execute()

    def done(self, merchant_id: int, customer_id: int, pages: int | None = None) -> None:
        """The read is over: remember how many pages it took, and free the customer."""
        pipe = self.redis.pipeline()
        if pages and pages > 1:
            pipe.hset(self._pages_key(merchant_id), str(customer_id), pages)
        elif pages == 1:
            pipe.hdel(self._pages_key(merchant_id), str(customer_id))
        pipe.delete(self._inflight_key(merchant_id, customer_id))
        pipe.execute()

    def dispatch(self, merchant_id: int, limits: Limits, now: float, max_batch: int | None = None) -> Dispatch:
        keys = self._keys(merchant_id) + [self.pending_key(merchant_id), self._pages_key(merchant_id), self.backlog_key]
        taken, wait = self._dispatch(keys=keys, args=[
            self._inflight_key(merchant_id, ""), f"{now:.6f}", limits.plan_limit, limits.plan_window,
            limits.customer_limit, limits.customer_window, max_batch or self.MAX_BATCH, self.INFLIGHT_SECONDS,
            merchant_id])
        pairs = [(int(taken[i]), int(taken[i + 1])) for i in range(0, len(taken), 2)]
        wait = float(wait)
        return Dispatch(customers=pairs, wait=None if wait < 0 else wait)

    def drop_store(self, merchant_id: int) -> int:
        """Forget every customer waiting for this store; returns how many."""
        pipe = self.redis.pipeline()
        pipe.zcard(self.pending_key(merchant_id))
        pipe.delete(self.pending_key(merchant_id), self._pages_key(merchant_id))
        pipe.srem(self.backlog_key, merchant_id)
        dropped = pipe.execute()[0]
        return int(dropped)

    def backlog(self) -> list[int]:
        return sorted(int(m) for m in self.redis.smembers(self.backlog_key))

    # -- spending outside dispatch ---------------------------------------------------------
    def acquire(self, merchant_id: int, limits: Limits, now: float, need: int = 1, tag: str = "x") -> bool:
        """Take `need` slots now if there are that many; never waits."""
        return bool(self._acquire(keys=self._keys(merchant_id), args=[
            f"{now:.6f}", need, limits.plan_limit, limits.plan_window, limits.customer_limit,
            limits.customer_window, tag]))

    def blocked(self, merchant_id: int, now: float) -> bool:
        """Salla told us to wait and the time is not up yet."""
        until = self.redis.get(self._keys(merchant_id)[2])
        return until is not None and float(until) > now

    # -- what Salla told us ----------------------------------------------------------------
    def block_until(self, merchant_id: int, until: float, now: float) -> None:
        self._block(keys=[self._keys(merchant_id)[2]], args=[f"{until:.3f}", f"{now:.3f}"])

    def observe(self, merchant_id: int, headers, now: float) -> None:
        """Obey Salla's rate headers: Retry-After (on 429), or Remaining 0 until Reset."""
        retry_after = _number(headers.get("Retry-After"))
        if retry_after is not None:
            self.block_until(merchant_id, now + max(retry_after, 1.0), now)
            return
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        reset = _number(headers.get("X-RateLimit-Reset"))
        if remaining is not None and remaining <= 0 and reset is not None and reset > now:
            self.block_until(merchant_id, reset, now)


def _number(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
