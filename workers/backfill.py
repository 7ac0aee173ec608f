"""Cover a store's existing customers: list them (GET /customers) and read each one's history
at a lower priority than event-driven reads, through the store's one budget.

start        a new run (after app.store.authorize, or `backfill M` / POST /admin/stores/M/backfill);
             a run already going is left alone (service/ops/backfill.py, with progress)
want_page    asked by every pump: should the next page of customers be listed now? (only when
             the backfill's own queue runs low, and one page at a time: a lock)
list_page    one page: its customers' profiles saved, each customer queued once per run
             (`backfill:seen`), the cursor moved on. Everything is in Redis (service/state/keys.py:
             `backfill`, `backfill:pending`, `backfill:seen`), so a restarted worker resumes
             where the last one stopped: beat's pump-backlog pumps every store whose backfill runs.
read_done    a read the dispatch took from `backfill:pending` finished: counted in the progress
progress     customers listed, read, reminders queued, what is left and how long it should
             take at the store's budget
resync       beat, hourly: customers not read for RESYNC_AFTER_DAYS go into the same
             low-priority queue; read times older than DATA_RETENTION_DAYS are forgotten

Priority: the dispatch script (service/state/budget.py) serves due event-driven customers first and
gives the backfill only what budget they leave; a page of customers is listed only while no
event-driven customer is due. A customer an event-driven read already holds is not read again
by the backfill ("covered").

Install storms: at most BACKFILL_MAX_STORES stores backfill at once, fleet-wide, each with one
slot (`{backfill}:running`, scored by the slot's lease); the others wait `queued` in install
order (`{backfill}:queue`) and show their place in `backfill-status` (service/ops/backfill.py:
start, fleet, progress and the slots' Lua, plain Redis). `admit` hands free slots to the first
stores queued, one each, and pumps them at once (`Runtime.wake`). A slot frees when
the run is done, fails or the store uninstalls (`release`), or when nobody renewed its lease for
SLOT_LEASE_SECONDS: every pump of the store renews it (`want_page`), and beat pumps a running
store every 15 s, so only a store nobody pumps (every worker dead, a store that cannot be read)
loses its slot; it waits at the back of the queue, its progress kept. Beat's pump-backlog runs
`admit` every tick, so no slot outlives its lease.

Reads: however many stores backfill, at most BACKFILL_MAX_READS backfill (and resync) reads are
in flight fleet-wide, each store at most Budget.BACKFILL_IN_FLIGHT. A pump reserves places before
its dispatch (`{backfill}:reads`, service/state/budget.py), so a backfill read is handed out, and
its Salla budget spent, only when it can go into the reads queue with no more than that many
backfill reads ahead of it: it runs at once, and an event-driven read never waits behind a
storm's. A store that finds no place waits in `{backfill}:starved`; each read that ends
(`read_done`) passes its place to the first store there, the finishing store going to the back
when it has more: places go round the stores in turn.
"""
from __future__ import annotations

import logging

from service.domain.events import EventError, customer_from
from service.clients.oauth import OperatorActionNeeded, StoreNotAuthorized, usable
from service.ops.personal_data import keep_recorded_opt_outs
from service.ops.runtime import Runtime
from service.clients.salla_client import SallaForbidden, SallaPermanentError, SallaTransientError, SallaUnauthorized
from service.clients.salla_refusals import BLOCKED, FORBIDDEN_HOLD_SECONDS, forbidden_reason
# start, progress, fleet and the slots' plain-Redis part (what the web and CLI call) live there
from service.ops.backfill import DONE, FAILED, QUEUED, RUNNING, SLOT_LEASE_SECONDS, _admit, _text, state

log = logging.getLogger(__name__)

LISTING_LOCK_SECONDS = 60
MAX_LIST_FAILURES = 12  # transient failures of one page in a row before the run gives up
RESYNC_BATCH = 5000  # customers queued by one resync tick per store, at most

# KEYS: seen, pending. ARGV: score base, then customer ids. Each customer once per run.
_QUEUE_NEW = """
local added = 0
for i = 2, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'NX', tonumber(ARGV[1]) + i, ARGV[i])
    added = added + 1
  end
end
return added
"""


def admit(rt: Runtime, now: float) -> list[int]:
    """Beat's tick and every freed slot: leases that ran out go back in line, free slots go to
    the first stores queued, and each admitted store is pumped now. A store that cannot be read
    is failed at once (its slot goes on to the next). Returns the stores that began."""
    began = []
    for _ in range(10):
        admitted = _admit(rt.store, rt.keys, now, rt.settings.backfill_max_stores)
        unusable = [m for m in admitted if not usable(rt.registry, m)]
        for merchant_id in unusable:
            _end(rt, merchant_id, FAILED, "the store is not authorized (uninstalled or needs re-authorization)")
        began += [m for m in admitted if m not in unusable]
        if not unusable:
            break
        rt.store.zrem(rt.keys.backfill_running, *unusable)  # their slots go on to the next stores
    for merchant_id in began:
        if rt.wake is not None:
            rt.wake(merchant_id)
    return began


def release(rt: Runtime, merchant_id: int) -> list[int]:
    """The store's run is over (or the store is gone): its slot, or its place in the queue, goes
    to the next store. Returns the stores that began."""
    pipe = rt.store.pipeline(transaction=False)
    pipe.zrem(rt.keys.backfill_running, merchant_id)
    pipe.zrem(rt.keys.backfill_queue, merchant_id)
    pipe.zrem(rt.keys.backfill_starved, merchant_id)  # a gone store's wake-up would be lost on it
    freed, _, _ = pipe.execute()
    return admit(rt, rt.clock()) if freed else []


def _holds_slot(rt: Runtime, merchant_id: int) -> bool:
    """Renew the store's slot; False when it has none (its lease ran out): it waits in line again."""
    pipe = rt.store.pipeline(transaction=False)
    pipe.zadd(rt.keys.backfill_running, {str(merchant_id): rt.clock() + SLOT_LEASE_SECONDS}, xx=True)
    pipe.zscore(rt.keys.backfill_running, merchant_id)
    if pipe.execute()[1] is not None:
        return True
    rt.store.hset(rt.keys.store(merchant_id).backfill, "state", QUEUED)
    began = _admit(rt.store, rt.keys, rt.clock(), rt.settings.backfill_max_stores, merchant_id)
    return merchant_id in began


def low_water(rt: Runtime) -> int:
    return 2 * rt.settings.salla_page_size


def want_page(rt: Runtime, merchant_id: int) -> bool:
    """Is it time to list the next page? Takes the listing lock when it is."""
    k = rt.keys.store(merchant_id)
    current = state(rt.store, rt.keys, merchant_id)
    if current.get("state") != RUNNING or not _holds_slot(rt, merchant_id):
        return False
    if current.get("listing_done") == "1":
        _finish_if_empty(rt, merchant_id)
        return False
    rt.store.sadd(rt.keys.backlog, merchant_id)  # still listing: keep the store in beat's view
    if rt.store.zcard(k.backfill_pending) >= low_water(rt):
        return False
    if not rt.store.set(k.backfill_listing, "1", nx=True, ex=LISTING_LOCK_SECONDS):
        return False
    # A page is a Salla request in a reads process too: it takes a fleet-wide place, like a read.
    if rt.budget.reserve_listing(merchant_id, rt.clock(), rt.settings.backfill_max_reads, LISTING_LOCK_SECONDS):
        return True
    rt.store.delete(k.backfill_listing)  # no place: the store waits in line; a freed place wakes it
    return False


def list_page(rt: Runtime, merchant_id: int) -> str:
    """List the next page of the store's customers. Returns what happened (for logs/tests)."""
    k = rt.keys.store(merchant_id)
    try:
        return _list_page(rt, merchant_id)
    finally:
        rt.store.delete(k.backfill_listing)
        woken = rt.budget.free_listing(merchant_id, rt.clock(), rt.settings.backfill_max_reads)
        if woken is not None and rt.wake is not None:
            rt.wake(woken)


def _list_page(rt: Runtime, merchant_id: int) -> str:
    k, now = rt.keys.store(merchant_id), rt.clock()
    current = state(rt.store, rt.keys, merchant_id)
    if current.get("state") != RUNNING or current.get("listing_done") == "1":
        return "idle"
    if not usable(rt.registry, merchant_id):
        return _fail(rt, merchant_id, "the store is not authorized (uninstalled or needs re-authorization)")
    if rt.registry.loyalty_missing(merchant_id):
        return _fail(rt, merchant_id, "the store has no Customer Loyalty app")
    # Event-driven reads first: while one is due, the page waits.
    if rt.store.zcount(k.pending, "-inf", now):
        return "deferred"
    if not rt.budget.acquire(merchant_id, rt.limits(merchant_id), now, 1, tag="list"):
        return "no_budget"
    page = int(current.get("next_page", 1))

    def observe(response) -> None:
        rt.budget.observe(merchant_id, response.headers, rt.clock())

    try:
        token = rt.provider.access_token(merchant_id)
        try:
            rows, total_pages, total = rt.client.list_customers(token, page, observe)
        except SallaUnauthorized as exc:
            if exc.scope_missing:
                rt.provider.mark_needs_reauth(merchant_id, "the token lacks the customers.read scope: re-authorize")
                raise StoreNotAuthorized("scope missing") from None
            fresh = rt.provider.refresh(merchant_id, token)
            rows, total_pages, total = rt.client.list_customers(fresh.access_token, page, observe)
    except (StoreNotAuthorized, OperatorActionNeeded) as exc:
        return _fail(rt, merchant_id, f"cannot list customers: {exc}")
    except SallaTransientError as exc:
        failures = rt.store.hincrby(k.backfill, "list_failures", 1)
        rt.store.hset(k.backfill, "last_error", str(exc)[:300])
        log.warning("merchant=%s: backfill page %d failed (%d in a row): %s", merchant_id, page, failures, exc)
        if failures >= MAX_LIST_FAILURES:
            return _fail(rt, merchant_id, f"GET /customers page {page} kept failing: {exc}")
        return "retry"
    except SallaPermanentError as exc:
        answered_before = page > 1 or bool(rt.store.exists(k.loyalty_ok))
        if isinstance(exc, SallaForbidden) and forbidden_reason(exc.code, exc.detail, answered_before) == BLOCKED:
            # Salla blocked the store for now (service/clients/salla_refusals.py): the same page after the
            # hold the reads wait out too, the run goes on.
            rt.budget.block_until(merchant_id, now + FORBIDDEN_HOLD_SECONDS, now)
            rt.store.hset(k.backfill, "last_error", str(exc)[:300])
            log.warning("merchant=%s: backfill page %d: Salla answered 403, read as a temporary block: %s",
                        merchant_id, page, exc)
            return "retry"
        return _fail(rt, merchant_id, f"GET /customers page {page} refused: {exc}")

    customers = []
    for row in rows:
        try:
            customer = customer_from(row)
        except EventError:
            customer = None
        if customer is None:
            rt.store.hincrby(k.backfill, "unreadable_rows", 1)
            continue
        # The listing carries what a reminder needs (name, mobile, e-mail, language): Salla's
        # state now, so an event newer than the listing is written over it field by field.
        rt.profiles.save(merchant_id, customer, at=now)
        customers.append(customer.id)
    added = 0
    if customers:
        added = int(rt.store.eval(_QUEUE_NEW, 2, k.backfill_seen, k.backfill_pending, page * 1000,
                                  *[str(c) for c in customers]))
    last = not rows or page >= total_pages
    mapping = {"next_page": page + 1, "total_pages": total_pages, "list_failures": 0, "last_page_at": f"{now:.0f}"}
    if total is not None:
        mapping["total"] = total
    if last:
        mapping["listing_done"] = 1
    pipe = rt.store.pipeline()
    pipe.hset(k.backfill, mapping=mapping)
    pipe.hincrby(k.backfill, "listed", added)
    pipe.hincrby(k.counters, "requests", 1)
    pipe.sadd(rt.keys.backlog, merchant_id)
    pipe.execute()
    log.info("merchant=%s: backfill listed page %d/%d, %d customers queued", merchant_id, page, total_pages, added)
    return "listed"


def _fail(rt: Runtime, merchant_id: int, reason: str) -> str:
    _end(rt, merchant_id, FAILED, reason)
    release(rt, merchant_id)
    return "failed"


def _end(rt: Runtime, merchant_id: int, outcome: str, reason: str = "") -> None:
    """The run is over (its slot is the caller's to release)."""
    k = rt.keys.store(merchant_id)
    pipe = rt.store.pipeline()
    pipe.hset(k.backfill, mapping={"state": outcome, "finished_at": f"{rt.clock():.0f}"})
    if reason:
        pipe.hset(k.backfill, "error", reason[:300])
    pipe.delete(k.backfill_seen)  # every store's customer ids, needed only while the run goes
    pipe.execute()
    if outcome == FAILED:
        rt.registry.count(merchant_id, "backfills_failed")
        log.error("merchant=%s: backfill stopped: %s", merchant_id, reason)
    else:
        log.info("merchant=%s: backfill done", merchant_id)


def _finish_if_empty(rt: Runtime, merchant_id: int) -> None:
    k = rt.keys.store(merchant_id)
    if rt.store.zcard(k.backfill_pending) or rt.store.scard(k.backfill_reading):
        return
    if rt.store.hget(k.backfill, "state") in (RUNNING, RUNNING.encode()):
        _end(rt, merchant_id, DONE)
        release(rt, merchant_id)


def read_done(rt: Runtime, merchant_id: int, customer_id: int, outcome: str, reminders: int) -> None:
    """A read finished (read, dropped or failed): if the backfill or the resync handed it out,
    count it."""
    k = rt.keys.store(merchant_id)
    pipe = rt.store.pipeline(transaction=False)  # one round trip on every read's path
    # `seen` first: the run's last other read may end the run (and delete `seen`) as soon as this
    # one leaves `reading`; asked after, this read was counted as a resync's (89 of 90 read).
    pipe.sismember(k.backfill_seen, customer_id)
    pipe.srem(k.backfill_reading, customer_id)
    pipe.hget(k.backfill, "state")
    pipe.zcard(k.backfill_pending)
    of_this_run, handed_out_by_backfill, backfill_state, waiting = pipe.execute()
    if not handed_out_by_backfill:
        # An event-driven read. While a backfill runs, the customer counts as covered: not
        # listed again, or taken out of the backfill's queue if already listed (read once).
        if outcome == "read" and _text(backfill_state) == RUNNING:
            if rt.store.sadd(k.backfill_seen, customer_id) or rt.store.zrem(k.backfill_pending, customer_id):
                rt.store.hincrby(k.backfill, "covered", 1)
        return
    # Its fleet-wide place (BACKFILL_MAX_READS) goes to the first store in line for one; this
    # store, if it has more waiting, to the back of that line: places pass from store to store.
    woken = rt.budget.free_backfill(merchant_id, customer_id, rt.clock(), rt.settings.backfill_max_reads,
                                    more=bool(waiting))
    if woken is not None and rt.wake is not None:
        rt.wake(woken)
    if of_this_run:
        pipe = rt.store.pipeline()
        pipe.hincrby(k.backfill, "read" if outcome == "read" else "failed", 1)
        pipe.hincrby(k.backfill, "reminders", reminders)
        pipe.hget(k.backfill, "listing_done")
        done_listing = pipe.execute()[-1]
        if _text(done_listing) == "1":
            _finish_if_empty(rt, merchant_id)  # the last read of the run ends it
    else:
        rt.registry.count(merchant_id, "resync_reads" if outcome == "read" else "resync_reads_failed")


def read_put_back(rt: Runtime, merchant_id: int, customer_id: int) -> None:
    """A read went back in line (a 429, a timeout, a longer history than paid for): if it held a
    fleet-wide backfill place, the place goes on now, not when the read's lease runs out."""
    woken = rt.budget.free_backfill(merchant_id, customer_id, rt.clock(), rt.settings.backfill_max_reads, more=False)
    if woken is not None and rt.wake is not None:
        rt.wake(woken)


def count_covered(rt: Runtime, merchant_id: int, covered: int) -> None:
    if covered:
        rt.store.hincrby(rt.keys.store(merchant_id).backfill, "covered", covered)


def resync(rt: Runtime, now: float) -> dict:
    """Beat, hourly. Per store: read times past the retention period are dropped; customers not
    read for RESYNC_AFTER_DAYS, still within it (their profile is still kept), are queued at
    low priority. Returns counts."""
    s = rt.settings
    forgotten = stale_queued = 0
    for merchant_id in rt.registry.merchants():
        k = rt.keys.store(merchant_id)
        # Once per store: opt-outs its profiles recorded before suppression entries existed get
        # theirs, before retention can expire the profile that alone remembers them.
        keep_recorded_opt_outs(rt.store, rt.profiles, rt.keys, merchant_id, now)
        # Customers not read for the retention period: their read time goes, and with it what the
        # store's hashes keep per customer (pages of history, attempts, a waiting read's label).
        expired = [_text(c) for c in rt.store.zrangebyscore(k.read_at, "-inf", now - s.data_retention_days * 86400)]
        if expired:
            pipe = rt.store.pipeline()
            pipe.zrem(k.read_at, *expired)
            for key in (k.pages, k.attempts, k.correlation):
                pipe.hdel(key, *expired)
            pipe.execute()
        forgotten += len(expired)
        if not usable(rt.registry, merchant_id) or rt.registry.loyalty_missing(merchant_id) \
                or rt.registry.config(merchant_id).get("paused"):
            continue
        stale = [_text(c) for c in rt.store.zrangebyscore(k.read_at, "-inf", now - s.resync_after_days * 86400,
                                                            start=0, num=RESYNC_BATCH)]
        if not stale:
            continue
        pipe = rt.store.pipeline()
        for customer in stale:
            pipe.exists(k.profile(int(customer)))
        kept = pipe.execute()
        gone = [c for c, exists in zip(stale, kept) if not exists]
        wanted = [c for c, exists in zip(stale, kept) if exists]
        pipe = rt.store.pipeline()
        if gone:  # not seen for the retention period: nothing of theirs is kept to refresh
            pipe.zrem(k.read_at, *gone)
        if wanted:
            pipe.zadd(k.backfill_pending, {c: now for c in wanted}, nx=True)
            # Not due again until this read is old: one queueing per period.
            pipe.zadd(k.read_at, {c: now for c in wanted})
            pipe.sadd(rt.keys.backlog, merchant_id)
        pipe.execute()
        stale_queued += len(wanted)
        forgotten += len(gone)
    return {"queued": stale_queued, "forgotten": forgotten}


def note_read(rt: Runtime, merchant_id: int, customer_id: int, now: float) -> None:
    rt.store.zadd(rt.keys.store(merchant_id).read_at, {str(customer_id): now})
