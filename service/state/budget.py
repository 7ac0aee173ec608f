"""Salla's request budget per store, and the per-store queue of customers waiting to be read.

Salla limits each store twice: the plan limit (120 requests a minute on the smallest plan)
and 500 requests per 10 minutes on customer endpoints, where the loyalty endpoint lives.
Both are kept here as sliding-window logs (a sorted set of request times per store and
limit): at most N requests in ANY window of the given length, which also keeps us inside
whatever window alignment Salla uses. Salla's own answers override us: a 429's Retry-After,
or X-RateLimit-Remaining 0 until X-RateLimit-Reset, block the store until then.

Backfill (and resync) customers wait in `backfill:pending`, at a lower priority: dispatch takes
them only with the budget the due event-driven customers left (workers/backfill.py).

Customers wait in the store's `pending` sorted set, scored by the earliest time they may be
read. ZADD NX is the coalescing: 50 events for one customer are one member, one read. The
dispatch script takes as many customers as the budget allows right now, spends one slot per
page we expect their history to have, and moves each one to `inflight` with a lease (the
score is the lease's deadline, which also serves as the read's token). An event arriving
during the read waits for it and then causes exactly one more read. A read whose worker died
(its lease ran out) goes back to `pending` on the next dispatch: nothing waits for a broker's
redelivery, and a stale redelivered read sees that its lease is gone and steps aside.
All in one Lua script whose keys are all the store's own (one cluster slot), so every
worker process shares one budget without races.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis

from service.state.keys import Keys

# Shared by both scripts: the two sliding-window logs of a store (plan, customer endpoints).
_WINDOWS = """
local function trim(plan, plan_window, cust, cust_window, now)
  redis.call('ZREMRANGEBYSCORE', plan, '-inf', now - plan_window)
  redis.call('ZREMRANGEBYSCORE', cust, '-inf', now - cust_window)
end

local function available(plan, plan_limit, cust, cust_limit)
  return math.min(plan_limit - redis.call('ZCARD', plan), cust_limit - redis.call('ZCARD', cust))
end

local function spend(plan, cust, now, tag, need, plan_window, cust_window)
  for i = 1, need do
    local member = string.format('%.6f:%s:d%d', now, tag, i)
    redis.call('ZADD', plan, now, member)
    redis.call('ZADD', cust, now, member)
  end
  -- the logs only matter for one window: they go by themselves once a store falls silent
  redis.call('EXPIRE', plan, math.ceil(plan_window) + 1)
  redis.call('EXPIRE', cust, math.ceil(cust_window) + 1)
end
"""

_DISPATCH = _WINDOWS + """
local plan, cust, blocked, pending, pages, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local bpending, breading = KEYS[7], KEYS[8]
local now = tonumber(ARGV[1])
local plan_limit, plan_window = tonumber(ARGV[2]), tonumber(ARGV[3])
local cust_limit, cust_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_batch = tonumber(ARGV[6])
local lease_base, lease_per_page = tonumber(ARGV[7]), tonumber(ARGV[8])
local backfill_in_flight = tonumber(ARGV[9])
-- Places for backfill reads the caller reserved fleet-wide (BACKFILL_MAX_READS, `Budget.reserve_backfill`)
local backfill_room = tonumber(ARGV[10])

-- Reads whose lease ran out (their worker died): back in line, keeping an earlier due time. A
-- backfill read goes back to the backfill's line: it never jumps ahead of event-driven reads.
local reaped = redis.call('ZRANGEBYSCORE', inflight, '-inf', now)
for _, customer in ipairs(reaped) do
  redis.call('ZREM', inflight, customer)
  if redis.call('SREM', breading, customer) == 1 and not redis.call('ZSCORE', pending, customer) then
    redis.call('ZADD', bpending, 'NX', 0, customer)
  else
    redis.call('ZADD', pending, 'LT', now, customer)
  end
end

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
local covered = 0
local avail = 0
local due = {}

-- Hand `customer` out from `queue` if the budget left covers its pages: its lease, its spend.
-- False (and waiting_need set) when it does not fit: the caller stops there.
local function hand_out(customer, queue)
  -- never more than a whole window: a longer history is read across windows
  local need = math.min(tonumber(redis.call('HGET', pages, customer) or '1'), plan_limit, cust_limit)
  if need > avail then
    waiting_need = need
    return false
  end
  avail = avail - need
  local lease = string.format('%.6f', now + lease_base + lease_per_page * need)
  redis.call('ZREM', queue, customer)
  redis.call('ZADD', inflight, lease, customer)
  -- tagged with the read's lease: the read moves each slot to the moment its request goes (_STAMP)
  spend(plan, cust, now, customer .. '@' .. lease, need, plan_window, cust_window)
  table.insert(taken, customer)
  table.insert(taken, tostring(need))
  table.insert(taken, lease)
  table.insert(taken, (queue == bpending) and '1' or '0')  -- a backfill read: it holds a fleet-wide place
  return true
end

if blocked_until <= now then
  avail = available(plan, plan_limit, cust, cust_limit)
  if avail > 0 then
    due = redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'LIMIT', 0, max_batch)
    for _, customer in ipairs(due) do
      if redis.call('ZSCORE', inflight, customer) then
        skipped = skipped + 1
      elseif not hand_out(customer, pending) then
        break
      end
    end
  end
end

-- The backfill's customers (and the resync's) get what the event-driven ones left: only when
-- no event-driven customer is due and waiting for budget. A customer an event-driven read
-- already has (queued or in flight) is left to it: read once, not twice.
-- At most `backfill_in_flight` of a store's at a time, and no more than the places the caller
-- reserved fleet-wide: the reads queue then holds at most BACKFILL_MAX_READS backfill reads
-- ahead of an event-driven read, however many stores backfill. A read is handed out only when
-- it can run at once, so its budget is spent when it reads (a read waiting long in a queue
-- after its budget was spent meets the next window's reads at Salla: 429).
local store_room = backfill_in_flight - redis.call('SCARD', breading)
local room = math.min(max_batch - #taken / 4, store_room, backfill_room)
local backfill_taken = 0
if blocked_until <= now and avail > 0 and waiting_need == 1 and #due < max_batch and room > 0 then
  local listed = redis.call('ZRANGE', bpending, 0, room - 1)
  for _, customer in ipairs(listed) do
    if redis.call('ZSCORE', inflight, customer) or redis.call('ZSCORE', pending, customer) then
      redis.call('ZREM', bpending, customer)
      covered = covered + 1
    elseif hand_out(customer, bpending) then
      redis.call('SADD', breading, customer)
      backfill_taken = backfill_taken + 1
    else
      break
    end
  end
end

-- Waiting only for a place (its own or the fleet's): a finished backfill read wakes the store
-- (workers/backfill.py read_done), a late look is only the safety net.
local low = redis.call('ZCARD', bpending)
local backfill_full = low > 0 and (redis.call('SCARD', breading) >= backfill_in_flight
                                   or backfill_taken >= backfill_room)
local left = redis.call('ZCARD', pending) + low
local busy = redis.call('ZCARD', inflight)
if left == 0 then
  return {taken, '-1', busy, #reaped, covered}
end
local budget_wait = math.max(slot_wait(plan, plan_limit, plan_window, waiting_need),
                             slot_wait(cust, cust_limit, cust_window, waiting_need), blocked_until - now)
-- The next look is the sooner of what the event-driven customers and the backfill's wait for.
local wait = nil
local first = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
if first[2] then
  -- the first event-driven customer may not be due yet (debounce, backoff)
  wait = math.max(budget_wait, tonumber(first[2]) - now)
end
if low > 0 then
  -- Backfill customers waiting only for a place (the store's or the fleet's): a backfill read
  -- that ends wakes the store (or the next in line), a late look is only the safety net. It
  -- must never put off an event-driven customer's look (that one waited for it: seconds).
  local backfill_wait = backfill_full and lease_base or budget_wait
  wait = wait and math.min(wait, backfill_wait) or backfill_wait
end
if wait <= 0 then
  -- due customers are waiting only for reads in flight: look again shortly
  wait = (skipped > 0) and 1 or 0
end
return {taken, tostring(wait), left + busy, #reaped, covered}
"""

# KEYS: inflight, pending, pages. ARGV: customer, lease ('' = whatever lease), then the mode:
# 'done' (pages: remember how many the history took) or 'retry' (not_before, pages).
# Only the holder of the current lease may finish it: a stale redelivered read must not free
# (or requeue) a customer that a newer dispatch is reading.
_FINISH = """
local inflight, pending, pages = KEYS[1], KEYS[2], KEYS[3]
local customer, lease, mode = ARGV[1], ARGV[2], ARGV[3]
local current = redis.call('ZSCORE', inflight, customer)
if lease ~= '' and current and tonumber(current) ~= tonumber(lease) then return 0 end
redis.call('ZREM', inflight, customer)
if mode == 'done' then
  local n = tonumber(ARGV[4])
  if n and n > 1 then redis.call('HSET', pages, customer, n)
  elseif n == 1 then redis.call('HDEL', pages, customer) end
else
  local n = tonumber(ARGV[5])
  if n and n > 0 then redis.call('HSET', pages, customer, n) end
  redis.call('ZADD', pending, ARGV[4], customer)
end
return 1
"""

_ACQUIRE = _WINDOWS + """
local plan, cust, blocked = KEYS[1], KEYS[2], KEYS[3]
local now, need = tonumber(ARGV[1]), tonumber(ARGV[2])
local plan_limit, plan_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local cust_limit, cust_window = tonumber(ARGV[5]), tonumber(ARGV[6])
trim(plan, plan_window, cust, cust_window, now)
if tonumber(redis.call('GET', blocked) or '0') > now then return 0 end
if available(plan, plan_limit, cust, cust_limit) < need then return 0 end
spend(plan, cust, now, ARGV[7], need, plan_window, cust_window)
return 1
"""

# KEYS: plan, cust. ARGV: now, the read's tag (customer@lease), plan limit and window, customer
# limit and window. A read's slots were logged when it was dispatched; it may reach Salla later
# (a busy worker, a restart). Just before each paid page goes, one of its slots still at its
# dispatch time moves to now, so the log holds the moment the request really goes (moving a
# slot later never lowers what a later window counts). A slot that already left the window (the
# read was held up longer than it) is taken again now if the window has room; if not, nothing
# changes and the page does not go (0): the read goes back in line.
_STAMP = """
local now, tag = tonumber(ARGV[1]), ARGV[2]
local limits = {tonumber(ARGV[3]), tonumber(ARGV[5])}
local windows = {tonumber(ARGV[4]), tonumber(ARGV[6])}
local found = {}
local logs = {KEYS[1], KEYS[2]}  -- KEYS[3], the store's block, is the caller's check
for k, key in ipairs(logs) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - windows[k])
  local lowest = nil
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', key, cursor, 'MATCH', '*:' .. tag .. ':d*', 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      local score = tonumber(page[2][i + 1])
      if lowest == nil or score < lowest then found[k], lowest = page[2][i], score end
    end
  until cursor == '0'
  if found[k] == nil and redis.call('ZCARD', key) >= limits[k] then return 0 end
end
for k, key in ipairs(logs) do
  local index = 'x'
  if found[k] then
    index = string.match(found[k], ':d(%d+)$')
    redis.call('ZREM', key, found[k])
  end
  redis.call('ZADD', key, now, string.format('%.6f:%s:s%s', now, tag, index))
  redis.call('EXPIRE', key, math.ceil(windows[k]) + 1)
end
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


# Fleet-wide places for backfill reads (BACKFILL_MAX_READS): `{backfill}:reads` holds one member
# per place taken, scored by when it runs out (a reservation: LEASE_BASE_SECONDS; a read: its
# lease), so a place held by a dead pump or worker comes back by itself. `{backfill}:starved`
# lists the stores that found no place, in the order they asked: a freed place wakes the first.
# KEYS: reads, starved. ARGV: now, limit, want, store, reservation's end, a unique tag, [the place's
# name when it is one, held to its end: a listing's].
_RESERVE_BACKFILL = """
local reads, starved = KEYS[1], KEYS[2]
local now, limit, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', reads, '-inf', now)
local take = math.min(want, limit - redis.call('ZCARD', reads))
if take <= 0 then
  redis.call('ZADD', starved, 'NX', now, ARGV[4])
  return {}
end
redis.call('ZREM', starved, ARGV[4])
local tokens = {}
for i = 1, take do
  local token = (ARGV[7] and ARGV[7] ~= '') and ARGV[7] or (ARGV[4] .. ':~' .. ARGV[6] .. ':' .. i)
  redis.call('ZADD', reads, ARGV[5], token)
  table.insert(tokens, token)
end
return tokens
"""

# KEYS: reads, starved. ARGV: now, limit, a store to put at the back of the starved line ('' for
# none), how many members to remove, those members, then pairs (member, until) to add. Settles a
# reservation (its tokens become the reads handed out: "M:C" until the read's lease) and frees a
# finished read's place. Then, if a place is free and a store is starved, it is taken off the line
# and returned, to be woken ('' when none).
_SETTLE_BACKFILL = """
local reads, starved = KEYS[1], KEYS[2]
local now, limit, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
for i = 5, 4 + n do redis.call('ZREM', reads, ARGV[i]) end
local i = 5 + n
while i + 1 <= #ARGV do
  redis.call('ZADD', reads, ARGV[i + 1], ARGV[i])
  i = i + 2
end
if ARGV[3] ~= '' then redis.call('ZADD', starved, 'NX', now, ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', reads, '-inf', now)
if redis.call('ZCARD', reads) >= limit then return '' end
local first = redis.call('ZPOPMIN', starved)
return first[1] or ''
"""


# KEYS: the store's pump flag. ARGV: due (unix seconds), ttl ms. A pump may be scheduled when
# none is, or when this one is due sooner than the one that is (a read waiting a second must
# not wait behind a pump scheduled for later).
_CLAIM_PUMP = """
local current = tonumber(redis.call('GET', KEYS[1]) or 'inf')
if tonumber(ARGV[1]) < current - 0.5 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def logged_window(window: float) -> float:
    """How long the log keeps a request: Salla's window and a margin (a tenth of it, at most 1 s).

    A read is logged when it is dispatched and reaches Salla a little later (the queue, a
    worker's pickup, the connection). Salla's windows are fixed and start with a request, so
    with a log of exactly Salla's window the first request of a Salla window could arrive late
    and the request a window after it early, both in the same Salla window: a 429. The margin
    covers that jitter; it costs a tenth of the rate at most (1 s of 60 on Salla's plan window)."""
    return window + min(1.0, window / 10)


@dataclass(frozen=True)
class Limits:
    plan_limit: int
    plan_window: int
    customer_limit: int
    customer_window: int


@dataclass(frozen=True)
class Read:
    customer_id: int
    pages: int  # pages paid for
    lease: str  # the read's token: its lease deadline as dispatch wrote it
    backfill: bool = False  # from the backfill's (or resync's) queue: it holds a fleet-wide place


@dataclass(frozen=True)
class Dispatch:
    reads: list[Read]
    wait: float | None  # seconds until dispatch can take more; None: nothing pending
    reaped: int = 0  # reads whose lease ran out, put back in line
    covered: int = 0  # backfill customers left to the event-driven read that already had them

    @property
    def customers(self) -> list[tuple[int, int]]:
        return [(read.customer_id, read.pages) for read in self.reads]


class Budget:
    # A read's lease: long enough for a read of that many pages at Salla's slowest (each page
    # has its own timeout). When it runs out the worker is taken for dead and the read goes
    # back in line; a read that was only slow then finds its lease gone and steps aside.
    LEASE_BASE_SECONDS = 30
    LEASE_PER_PAGE_SECONDS = 15
    MAX_BATCH = 500
    # A store's backfill reads in flight at once: at Salla's budget (0.83 reads/s) and latency
    # (~0.3 s a page) one would do; two leave room for a slow read.
    BACKFILL_IN_FLIGHT = 2

    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.keys = Keys(prefix)
        self._dispatch = store.register_script(_DISPATCH)
        self._acquire = store.register_script(_ACQUIRE)
        self._stamp = store.register_script(_STAMP)
        self._block = store.register_script(_BLOCK)
        self._finish = store.register_script(_FINISH)
        self._claim_pump = store.register_script(_CLAIM_PUMP)
        self._reserve_backfill = store.register_script(_RESERVE_BACKFILL)
        self._settle_backfill = store.register_script(_SETTLE_BACKFILL)

    def _window_keys(self, merchant_id: int) -> list[str]:
        k = self.keys.store(merchant_id)
        return [k.budget_plan, k.budget_customer, k.blocked_until]

    # -- the pending queue -----------------------------------------------------------------
    def enqueue(self, merchant_id: int, customer_id: int, not_before: float) -> bool:
        """Add a customer to the store's queue. False: already waiting (coalesced)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.store(merchant_id).pending, {str(customer_id): not_before}, nx=True)
        pipe.sadd(self.keys.backlog, merchant_id)
        added, _ = pipe.execute()
        return bool(added)

    def holds(self, merchant_id: int, customer_id: int, lease: str | None, now: float | None = None) -> bool:
        """Does this read still hold its lease? False: it was taken for dead and handed out
        again, or its lease has run out, so that the next dispatch may hand it out again at any
        moment (a message that waited in the queue past its lease, e.g. behind a worker's slow
        shutdown: reading now would race that dispatch and read the customer twice)."""
        if not lease:
            return True
        if now is not None and float(lease) <= now:
            return False
        current = self.redis.zscore(self.keys.store(merchant_id).inflight, str(customer_id))
        return current is not None and float(current) == float(lease)

    def retry_later(self, merchant_id: int, customer_id: int, not_before: float, pages: int | None = None,
                    lease: str | None = None) -> bool:
        """Put a customer back (transient failure, 429, budget ran out mid-read)."""
        k = self.keys.store(merchant_id)
        done = self._finish(keys=[k.inflight, k.pending, k.pages],
                            args=[str(customer_id), lease or "", "retry", f"{not_before:.6f}", pages or 0])
        self.redis.sadd(self.keys.backlog, merchant_id)
        return bool(done)

    def done(self, merchant_id: int, customer_id: int, pages: int | None = None, lease: str | None = None) -> bool:
        """The read is over: remember how many pages it took, and free the customer."""
        k = self.keys.store(merchant_id)
        return bool(self._finish(keys=[k.inflight, k.pending, k.pages],
                                 args=[str(customer_id), lease or "", "done", pages or 0]))

    def dispatch(self, merchant_id: int, limits: Limits, now: float, max_batch: int | None = None,
                 backfill_room: int | None = None) -> Dispatch:
        """Hand out what the budget allows now: due event-driven customers first, then backfill
        ones, at most `backfill_room` of them (the fleet-wide places the caller reserved with
        `reserve_backfill`; None: no fleet-wide limit, only BACKFILL_IN_FLIGHT)."""
        k = self.keys.store(merchant_id)
        taken, wait, left, reaped, covered = self._dispatch(
            keys=[k.budget_plan, k.budget_customer, k.blocked_until, k.pending, k.pages, k.inflight,
                  k.backfill_pending, k.backfill_reading],
            args=[f"{now:.6f}", limits.plan_limit, logged_window(limits.plan_window), limits.customer_limit,
                  logged_window(limits.customer_window), max_batch or self.MAX_BATCH, self.LEASE_BASE_SECONDS,
                  self.LEASE_PER_PAGE_SECONDS, self.BACKFILL_IN_FLIGHT,
                  self.BACKFILL_IN_FLIGHT if backfill_room is None else backfill_room])
        reads = [Read(int(taken[i]), int(taken[i + 1]), _text(taken[i + 2]), _text(taken[i + 3]) == "1")
                 for i in range(0, len(taken), 4)]
        # The backlog set lists stores with reads waiting or in flight (a dead read's lease is
        # reaped by a later dispatch). It is a key of its own slot, so it is kept here, not in
        # the script: drop the store, then look again, since an enqueue may have come between.
        if int(left) == 0:
            self.redis.srem(self.keys.backlog, merchant_id)
            if self.redis.zcard(k.pending) or self.redis.zcard(k.inflight) or self.redis.zcard(k.backfill_pending):
                self.redis.sadd(self.keys.backlog, merchant_id)
        else:
            self.redis.sadd(self.keys.backlog, merchant_id)
        wait = float(wait)
        return Dispatch(reads=reads, wait=None if wait < 0 else wait, reaped=int(reaped), covered=int(covered))

    # -- fleet-wide places for backfill reads (BACKFILL_MAX_READS) --------------------------
    def reserve_backfill(self, merchant_id: int, now: float, limit: int) -> list[str]:
        """Fleet-wide places for the store's next backfill reads, before a dispatch: as many as it
        may have in flight (BACKFILL_IN_FLIGHT) and has waiting, no more than are free of `limit`.
        None free: the store joins the starved line, and the next place freed wakes the first
        store on it. Whatever the dispatch does not use goes back with `settle_backfill`."""
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(k.backfill_pending)
        pipe.scard(k.backfill_reading)
        waiting, reading = pipe.execute()
        want = min(int(waiting), self.BACKFILL_IN_FLIGHT - int(reading))
        if want <= 0:
            return []
        tokens = self._reserve_backfill(
            keys=[self.keys.backfill_reads, self.keys.backfill_starved],
            args=[f"{now:.6f}", limit, want, merchant_id, f"{now + self.LEASE_BASE_SECONDS:.6f}", uuid.uuid4().hex[:12]])
        return [_text(token) for token in tokens]

    def reserve_listing(self, merchant_id: int, now: float, limit: int, seconds: float) -> bool:
        """A fleet-wide place for the store's next page of GET /customers (a Salla request in a
        reads process too), held until `free_listing` or for `seconds`. False: none free, the
        store joins the starved line."""
        return bool(self._reserve_backfill(
            keys=[self.keys.backfill_reads, self.keys.backfill_starved],
            args=[f"{now:.6f}", limit, 1, merchant_id, f"{now + seconds:.6f}", "", f"{merchant_id}:list"]))

    def free_listing(self, merchant_id: int, now: float, limit: int) -> int | None:
        """The listing is over: its place is free. Returns a starved store to wake."""
        return self._settle(merchant_id, [f"{merchant_id}:list"], [], now, limit, requeue=False)

    def settle_backfill(self, merchant_id: int, tokens: list[str], reads: list[Read], now: float,
                        limit: int) -> int | None:
        """The reservation's places become the backfill reads the dispatch handed out (each until
        its lease); unused ones are free again. Returns a starved store to wake, if a place is free."""
        pairs = [item for read in reads for item in (f"{merchant_id}:{read.customer_id}", read.lease)]
        return self._settle(merchant_id, tokens, pairs, now, limit, requeue=False)

    def free_backfill(self, merchant_id: int, customer_id: int, now: float, limit: int, more: bool) -> int | None:
        """A backfill read is over: its place is free. The store, if it has more waiting (`more`),
        goes to the back of the starved line, and the first store on it is returned, to be woken:
        places pass from store to store in turn, not to whichever pumps first."""
        return self._settle(merchant_id, [f"{merchant_id}:{customer_id}"], [], now, limit, requeue=more)

    def _settle(self, merchant_id, remove, pairs, now, limit, requeue: bool) -> int | None:
        woken = self._settle_backfill(keys=[self.keys.backfill_reads, self.keys.backfill_starved],
                                      args=[f"{now:.6f}", limit, str(merchant_id) if requeue else "",
                                            len(remove), *remove, *pairs])
        woken = _text(woken)
        return int(woken) if woken else None

    def backfill_reads(self, now: float) -> int:
        """Fleet-wide places taken now (reads in flight and reservations not yet settled)."""
        return int(self.redis.zcount(self.keys.backfill_reads, f"({now:.6f}", "+inf"))

    def drop_store(self, merchant_id: int) -> int:
        """Forget every customer waiting for this store; returns how many."""
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcard(k.pending)
        pipe.delete(k.pending, k.pages, k.inflight, k.backfill_pending, k.backfill_reading, k.correlation)
        dropped = pipe.execute()[0]
        self.redis.srem(self.keys.backlog, merchant_id)
        return int(dropped)

    def claim_pump(self, merchant_id: int, due: float, ttl_seconds: float) -> bool:
        """May a pump due at `due` be scheduled? (At most one per store, unless sooner.)"""
        return bool(self._claim_pump(keys=[self.keys.store(merchant_id).pump],
                                     args=[f"{due:.3f}", int(ttl_seconds * 1000)]))

    def pump_started(self, merchant_id: int) -> None:
        self.redis.delete(self.keys.store(merchant_id).pump)

    def waiting(self, merchant_id: int) -> int:
        return int(self.redis.zcard(self.keys.store(merchant_id).pending))

    def backlog(self) -> list[int]:
        return sorted(int(m) for m in self.redis.smembers(self.keys.backlog))

    # -- spending outside dispatch ---------------------------------------------------------
    def acquire(self, merchant_id: int, limits: Limits, now: float, need: int = 1, tag: str = "x") -> bool:
        """Take `need` slots now if there are that many; never waits."""
        return bool(self._acquire(keys=self._window_keys(merchant_id), args=[
            f"{now:.6f}", need, limits.plan_limit, logged_window(limits.plan_window), limits.customer_limit,
            logged_window(limits.customer_window), tag]))

    def stamp(self, merchant_id: int, customer_id: int, lease: str | None, limits: Limits, now: float) -> bool:
        """Just before a paid page of a dispatched read goes to Salla: one of the read's slots,
        logged at its dispatch, moves to now, or one is taken again if it left the window
        (_STAMP). False: it had left and the window is full; the page must not go. A read without
        a lease (none was dispatched) has nothing to stamp."""
        if not lease:
            return True
        return bool(self._stamp(keys=self._window_keys(merchant_id), args=[
            f"{now:.6f}", f"{customer_id}@{lease}", limits.plan_limit, logged_window(limits.plan_window),
            limits.customer_limit, logged_window(limits.customer_window)]))

    def blocked(self, merchant_id: int, now: float) -> bool:
        """Salla told us to wait and the time is not up yet."""
        until = self.redis.get(self.keys.store(merchant_id).blocked_until)
        return until is not None and float(until) > now

    # -- what Salla told us ----------------------------------------------------------------
    def block_until(self, merchant_id: int, until: float, now: float) -> None:
        self._block(keys=[self.keys.store(merchant_id).blocked_until], args=[f"{until:.3f}", f"{now:.3f}"])

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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
