"""A customer's way from an event to reminders, as plain functions over a Runtime.

accept_event  an event arrives: remember the customer, queue them for a read (coalesced)
pump          spend the store's budget on waiting customers: one read task each
sync_customer one read attempt, with token refresh, Salla's errors and the budget handled
then workers/reminding.py decides what to send, hold or schedule

Celery appears nowhere here: the tasks pass callbacks (`send_sync`, `schedule_pump`,
`send_reminder`) so tests can call these functions directly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis

from service.domain.events import Customer, event_time
from service.domain.loyalty import Lot, parse_history
from workers import backfill, reminding
from service.clients import salla_refusals
from workers.backoff import retry_countdown
from service.clients.oauth import OperatorActionNeeded, StoreNotAuthorized, usable
from service.ops.runtime import Runtime
from service.clients.salla_client import (BudgetExhausted, SallaForbidden, SallaNotFound, SallaPermanentError,
                                  SallaTransientError, SallaUnauthorized)

log = logging.getLogger(__name__)

ALARM_RETRY_SECONDS = 300  # a read waiting for an operator (service/state/alarms.py) looks again this often
FORBIDDEN_HOLD_SECONDS = salla_refusals.FORBIDDEN_HOLD_SECONDS  # a 403 read as a temporary block


@dataclass
class SyncResult:
    outcome: str  # read | requeued | dropped | failed | stale
    lots: list[Lot] = field(default_factory=list)
    reminders: list[dict] = field(default_factory=list)
    detail: str = ""


def accept_event(rt: Runtime, message: dict) -> str:
    merchant_id = int(message["merchant_id"])
    customer = Customer.from_dict(message["customer"])
    registry = rt.registry
    if registry.is_uninstalled(merchant_id):
        registry.count(merchant_id, "dropped_events")
        _log_event(message, merchant_id, customer.id, "dropped, the store uninstalled the app")
        return "dropped"
    # The customer's details and opt-out count even while the store cannot be read; in the
    # order of the events' own times (an older one retried late changes nothing a newer one set).
    if rt.profiles.save(merchant_id, customer, event_moment(message, rt.clock())) is False:
        # Opted out (customer.* webhooks carry the flag), and no newer event said otherwise:
        # pending reminders go now.
        reminding.cancel_customer(rt, merchant_id, customer.id, rt.clock())
    if not usable(registry, merchant_id):
        registry.count(merchant_id, "dropped_events")
        _log_event(message, merchant_id, customer.id, "dropped, the store cannot be read (re-authorization needed)")
        return "dropped"
    if registry.loyalty_missing(merchant_id):
        registry.count(merchant_id, "skipped_no_loyalty_app")
        _log_event(message, merchant_id, customer.id, "skipped, the store has no loyalty app")
        return "no_loyalty_app"
    registry.count(merchant_id, "events")
    if rt.budget.enqueue(merchant_id, customer.id, rt.clock() + rt.settings.sync_debounce_seconds):
        remember_correlation(rt, merchant_id, customer.id, message.get("cid"))
        _log_event(message, merchant_id, customer.id, "a read is queued")
        return "queued"
    _log_event(message, merchant_id, customer.id, "joins the read already waiting")
    registry.count(merchant_id, "events_coalesced")
    return "coalesced"


def event_moment(message: dict, now: float) -> float:
    """When the event happened: Salla's created_at; when it has none we can read, when we
    received it (a retry is received later than its first delivery: the best we know)."""
    moment = event_time(message.get("event_created_at") or "")
    if moment is None:
        try:
            moment = datetime.fromisoformat(message.get("received_at") or "").timestamp()
        except (TypeError, ValueError):
            moment = now  # a message queued before either was kept
    return moment


def _log_event(message: dict, merchant_id: int, customer_id: int, outcome: str) -> None:
    # One INFO line per accepted webhook, whatever became of it: the web logs an accepted one
    # at DEBUG only, so this line (under the webhook's correlation id) is where it shows.
    log.info("event %s of merchant=%s customer=%s: %s", message.get("event"), merchant_id, customer_id, outcome)


# The correlation hash lives this long after its last write: a read waits far less, and a field
# left by a read that never finished (dropped with its store's queue, a lost task) is only a log
# label, so it may go with the hash instead of living on.
CORRELATION_KEEP_SECONDS = 86400


def remember_correlation(rt: Runtime, merchant_id: int, customer_id: int, cid: str | None) -> None:
    """The read a webhook queued carries the webhook's correlation id (its first one: later
    events for the same customer join that read). Removed when the read is over."""
    if cid:
        key = rt.keys.store(merchant_id).correlation
        pipe = rt.store.pipeline(transaction=False)
        pipe.hset(key, str(customer_id), cid)
        pipe.expire(key, CORRELATION_KEEP_SECONDS)
        pipe.execute()


def correlation_of(rt: Runtime, merchant_id: int, customer_id: int) -> str | None:
    cid = rt.store.hget(rt.keys.store(merchant_id).correlation, str(customer_id))
    return cid.decode() if isinstance(cid, bytes) else cid


def forget_correlation(rt: Runtime, merchant_id: int, customer_id: int) -> None:
    rt.store.hdel(rt.keys.store(merchant_id).correlation, str(customer_id))


def pump(rt: Runtime, merchant_id: int, send_sync, schedule_pump, list_page=None) -> int:
    """Hand out as many reads as the budget allows now; schedule the next look. Returns how many."""
    if not usable(rt.registry, merchant_id):
        return 0
    # Backfill reads take a fleet-wide place first (BACKFILL_MAX_READS): however many stores
    # backfill, the reads queue holds only that many of them ahead of an event-driven read, and
    # each runs as soon as it is handed out, when its budget is spent.
    now, most = rt.clock(), rt.settings.backfill_max_reads
    places = rt.budget.reserve_backfill(merchant_id, now, most)
    dispatch = None
    try:
        dispatch = rt.budget.dispatch(merchant_id, rt.limits(merchant_id), now, backfill_room=len(places))
    finally:
        if places:  # used ones become the reads' places; the others are free for the next store
            handed = [read for read in dispatch.reads if read.backfill] if dispatch is not None else []
            woken = rt.budget.settle_backfill(merchant_id, places, handed, rt.clock(), most)
            if woken is not None and woken != merchant_id and rt.wake is not None:
                rt.wake(woken)
    backfill.count_covered(rt, merchant_id, dispatch.covered)
    if dispatch.reaped:
        rt.registry.count(merchant_id, "reads_recovered", dispatch.reaped)
        log.warning("merchant=%s: %d read(s) whose worker died are back in line", merchant_id, dispatch.reaped)
    for index, read in enumerate(dispatch.reads):
        try:
            send_sync(merchant_id, read.customer_id, read.pages, read.lease)
        except Exception:
            # Not published: none of the reads not yet handed out may stay marked in flight.
            for unsent in dispatch.reads[index:]:
                rt.budget.retry_later(merchant_id, unsent.customer_id, rt.clock() + 5, pages=unsent.pages,
                                      lease=unsent.lease)
            log.exception("could not publish %d read(s) of merchant=%s; queued again",
                          len(dispatch.reads) - index, merchant_id)
            raise
    if dispatch.wait is not None:
        schedule_pump(merchant_id, dispatch.wait)
    if list_page is not None and backfill.want_page(rt, merchant_id):
        list_page(merchant_id)  # the backfill's queue runs low: the next page of customers
    return len(dispatch.reads)


def sync_customer(rt: Runtime, merchant_id: int, customer_id: int, pages_paid: int, send_reminder,
                  lease: str | None = None) -> SyncResult:
    """One read attempt. Whatever goes wrong, the customer ends up either read, or back in the
    store's queue, or dropped with a reason and a counter: never stuck in flight."""
    if not rt.budget.holds(merchant_id, customer_id, lease, rt.clock()):
        # Its lease ran out (the next dispatch hands it out again) or the read was done: a stale copy.
        rt.registry.count(merchant_id, "stale_reads_skipped")
        return SyncResult("stale", detail="lease no longer held")
    try:
        result = _sync(rt, merchant_id, customer_id, pages_paid, send_reminder, lease)
        if result.outcome in ("read", "dropped", "failed"):
            backfill.read_done(rt, merchant_id, customer_id, result.outcome, len(result.reminders))
        elif result.outcome == "requeued":
            backfill.read_put_back(rt, merchant_id, customer_id)
        return result
    except redis.RedisError:
        raise  # the task retries it: our state is in Redis and nothing could be recorded
    except Exception as exc:
        # A bug or an answer nobody foresaw: back in line with backoff, never lost in flight.
        log.exception("read of merchant=%s customer=%s failed unexpectedly", merchant_id, customer_id)
        result = _transient(rt, merchant_id, customer_id, exc, lease)
        if result.outcome == "failed":
            backfill.read_done(rt, merchant_id, customer_id, result.outcome, 0)
        return result


def _sync(rt: Runtime, merchant_id: int, customer_id: int, pages_paid: int, send_reminder,
          lease: str | None) -> SyncResult:
    budget, registry, now = rt.budget, rt.registry, rt.clock()
    if not usable(registry, merchant_id):
        budget.done(merchant_id, customer_id, lease=lease)
        registry.count(merchant_id, "dropped_syncs")
        return SyncResult("dropped", detail="store not usable")
    # The store's settings, read once for the whole read (budget, zone, plan): one round trip.
    config = registry.config(merchant_id)
    try:
        rows, pages = _read(rt, merchant_id, customer_id, pages_paid, config, lease)
    except StoreNotAuthorized as exc:
        budget.done(merchant_id, customer_id, lease=lease)
        registry.count(merchant_id, "dropped_syncs")
        log.warning("read of merchant=%s customer=%s dropped: %s", merchant_id, customer_id, exc)
        return SyncResult("dropped", detail=str(exc))
    except OperatorActionNeeded as exc:
        # Not the store's fault and not the customer's: wait for the operator, spend no attempt.
        budget.retry_later(merchant_id, customer_id, now + ALARM_RETRY_SECONDS, lease=lease)
        registry.count(merchant_id, "reads_waiting_for_operator")
        return SyncResult("requeued", detail=str(exc))
    except BudgetExhausted as exc:
        limits = rt.limits(merchant_id, config)
        if exc.pages > min(limits.plan_limit, limits.customer_limit):
            # More pages than one window allows: it could never be read whole. Say so, don't loop.
            budget.done(merchant_id, customer_id, lease=lease)
            registry.count(merchant_id, "syncs_failed")
            log.error("history of merchant=%s customer=%s needs more pages than one budget window allows",
                      merchant_id, customer_id)
            return SyncResult("failed", detail=str(exc))
        budget.retry_later(merchant_id, customer_id, now, pages=exc.pages, lease=lease)
        return SyncResult("requeued", detail=str(exc))
    except SallaTransientError as exc:
        return _transient(rt, merchant_id, customer_id, exc, lease)
    except SallaPermanentError as exc:
        if isinstance(exc, SallaForbidden) and _temporary_block(rt, merchant_id, exc):
            return _hold(rt, merchant_id, customer_id, exc, lease)
        _permanent(rt, merchant_id, customer_id, exc)
        budget.done(merchant_id, customer_id, lease=lease)
        return SyncResult("failed", detail=str(exc))

    # expiry_date has no zone: read it in the store's own zone when created_at names none.
    zone = config.get("timezone", rt.settings.store_timezone)
    lots, problems = parse_history(rows, zone)
    for problem in problems:
        log.warning("unreadable loyalty row merchant=%s customer=%s: %s", merchant_id, customer_id, problem)
    k = rt.keys.store(merchant_id)
    customer = rt.profiles.load(merchant_id, customer_id)
    reminders = reminding.after_read(rt, merchant_id, customer, lots, datetime.fromtimestamp(now, timezone.utc),
                                     send_reminder, config=config)
    # Done only once the reminders are queued: if this worker dies before, the read comes back.
    budget.done(merchant_id, customer_id, pages, lease=lease)
    pipe = rt.store.pipeline(transaction=True)
    pipe.hdel(k.attempts, customer_id)
    pipe.set(k.loyalty_ok, "1")
    pipe.hincrby(k.counters, "reads", 1)
    pipe.hincrby(k.counters, "requests", pages)
    pipe.zadd(k.read_at, {str(customer_id): now})  # the resync's and the retention's clock
    pipe.execute()
    log.info("synced merchant=%s customer=%s pages=%d lots=%d due=%d", merchant_id, customer_id, pages,
             len(lots), len(reminders))
    return SyncResult("read", lots=lots, reminders=reminders)


def _read(rt: Runtime, merchant_id: int, customer_id: int, pages_paid: int,
          config: dict | None = None, lease: str | None = None) -> tuple[list[dict], int]:
    limits = rt.limits(merchant_id, config)

    def pay(page: int) -> bool:
        # A read dispatched before Salla said "wait" (429, Remaining 0) must not go out now.
        if rt.budget.blocked(merchant_id, rt.clock()):
            return False
        return rt.budget.acquire(merchant_id, limits, rt.clock(), 1, tag=f"{customer_id}p{page}")

    def paid(page: int) -> bool:
        now = rt.clock()
        if rt.budget.blocked(merchant_id, now):
            return False
        # The slot paid at dispatch now says when the request really goes (Budget.stamp); held up
        # past its window with the window full, the page does not go and the read waits in line.
        return rt.budget.stamp(merchant_id, customer_id, lease, limits, now)

    def observe(response) -> None:
        rt.budget.observe(merchant_id, response.headers, rt.clock())

    token = rt.provider.access_token(merchant_id)
    try:
        return rt.client.loyalty_history(token, customer_id, pages_paid=pages_paid, pay_for_page=pay, observe=observe,
                                         may_send=paid)
    except SallaUnauthorized as exc:
        if exc.scope_missing:
            rt.provider.mark_needs_reauth(merchant_id, "the token lacks the customers.read scope: re-authorize the app")
            raise StoreNotAuthorized("scope missing") from None
        # Expired or revoked: refresh (once, under the store's lock) and read again. The first
        # attempt's page was spent, so the new one pays for itself.
        fresh = rt.provider.refresh(merchant_id, token)
        try:
            return rt.client.loyalty_history(fresh.access_token, customer_id, pages_paid=0, pay_for_page=pay, observe=observe)
        except SallaUnauthorized:
            rt.provider.mark_needs_reauth(merchant_id, "Salla refused a freshly refreshed token")
            raise StoreNotAuthorized("refreshed token refused") from None


def _transient(rt: Runtime, merchant_id: int, customer_id: int, exc: Exception, lease: str | None) -> SyncResult:
    key = rt.keys.store(merchant_id).attempts
    attempts = rt.store.hincrby(key, customer_id, 1)
    if attempts >= rt.settings.sync_max_attempts:
        rt.store.hdel(key, customer_id)
        rt.budget.done(merchant_id, customer_id, lease=lease)
        rt.registry.count(merchant_id, "syncs_failed")
        # Held reminders and wake-ups of this customer stay in the due set and ask again later.
        log.error("giving up reading merchant=%s customer=%s after %d attempts: %s", merchant_id, customer_id,
                  attempts, exc)
        return SyncResult("failed", detail=str(exc))
    retry_after = getattr(exc, "retry_after", None)
    if getattr(exc, "status", None) == 429:
        rt.registry.count(merchant_id, "salla_429")
        delay = retry_after or 1.0  # the store is blocked until then anyway
    else:
        delay = retry_countdown(attempts - 1, retry_after)
    rt.budget.retry_later(merchant_id, customer_id, rt.clock() + delay, lease=lease)
    log.warning("transient failure merchant=%s customer=%s attempt %d/%d, again in %.0fs: %s", merchant_id,
                customer_id, attempts, rt.settings.sync_max_attempts, delay, exc)
    return SyncResult("requeued", detail=str(exc))


def _temporary_block(rt: Runtime, merchant_id: int, exc: SallaForbidden) -> bool:
    answered_before = bool(rt.store.exists(rt.keys.store(merchant_id).loyalty_ok))
    return salla_refusals.forbidden_reason(exc.code, exc.detail, answered_before) == salla_refusals.BLOCKED


def _hold(rt: Runtime, merchant_id: int, customer_id: int, exc: SallaForbidden, lease: str | None) -> SyncResult:
    """Salla blocked the store for now: the store waits, this read goes back in line (no attempt
    spent: not the customer's fault) and every other queued read stays queued."""
    now = rt.clock()
    rt.budget.block_until(merchant_id, now + FORBIDDEN_HOLD_SECONDS, now)
    rt.budget.retry_later(merchant_id, customer_id, now + FORBIDDEN_HOLD_SECONDS, lease=lease)
    rt.registry.count(merchant_id, "salla_403_held")
    log.warning("merchant=%s: Salla answered 403 (%s), read as a temporary block; the store waits %ds, "
                "its reads stay queued", merchant_id, exc.detail or exc.code, FORBIDDEN_HOLD_SECONDS)
    return SyncResult("requeued", detail=str(exc))


def _permanent(rt: Runtime, merchant_id: int, customer_id: int, exc: SallaPermanentError) -> None:
    registry = rt.registry
    loyalty_ok = rt.store.exists(rt.keys.store(merchant_id).loyalty_ok)
    # A 403 that service/clients/salla_refusals.py reads as "no app", or a 404 from a store whose loyalty
    # endpoint never answered: the Customer Loyalty app is missing (Salla does not document
    # that answer). Stop polling the store a while.
    if isinstance(exc, SallaForbidden) or (isinstance(exc, SallaNotFound) and not loyalty_ok):
        registry.mark_loyalty_missing(merchant_id, rt.settings.loyalty_missing_retry_seconds)
        registry.count(merchant_id, "loyalty_app_missing")
        dropped = rt.budget.drop_store(merchant_id)
        log.warning("merchant=%s has no Customer Loyalty app (%s); not polled for %ds, %d queued reads dropped",
                    merchant_id, exc.status, rt.settings.loyalty_missing_retry_seconds, dropped)
        return
    registry.count(merchant_id, "sync_errors")
    log.error("loyalty history refused for merchant=%s customer=%s: %s", merchant_id, customer_id, exc)
