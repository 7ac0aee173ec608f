"""Thin Celery tasks: unpack, call plain functions, publish follow-up tasks.

Nothing waits in the broker for long. Reads are paced by the store's budget
(service/state/budget.py): a read that cannot happen now goes back into the store's queue in Redis.
Delivery retries, held reminders and wake-ups wait in the due set (service/state/due_set.py) for
the sweep. The only countdowns are a pump's next look and a retry after a Redis outage, both
capped at MAX_TASK_COUNTDOWN_SECONDS, far under the Redis broker's visibility timeout: a
message held past it would be delivered twice.

Every piece of work is also watched from Redis, so a worker killed with kill -9 loses nothing
even if its messages were lost: a read in flight has a lease (back in line when it runs out),
a delivery has a timer in the due set, a due entry has a lease of its own.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import redis
from celery import shared_task

from service.config.celery_config import (BACKFILL_LIST_TASK, DELIVER_TASK, DRAIN_TASK, ERASE_UNINSTALLED_TASK,
                                          FORGET_STORE_TASK, HANDLE_EVENT_TASK, HEARTBEAT_TASK, PUMP_BACKLOG_TASK,
                                          PUMP_TASK, RECOVER_INTAKE_TASK, RESYNC_TASK, STORE_AUTHORIZED_TASK, SWEEP_TASK, SYNC_TASK)
from workers import app_settings, backfill, delivery, lifecycle, reminding, sync
from workers.backoff import MAX_TASK_COUNTDOWN_SECONDS
from service.config.logs import correlation_id
from service.ops import backfill as backfill_runs  # start: the plain-Redis part the web and CLI call too
from service.ops.runtime import runtime, wake_with

log = logging.getLogger(__name__)

DRAIN_TIME_BUDGET_SECONDS = 20.0  # far under the broker's visibility timeout

# Redis unreachable inside a task: retry the task (our state lives in Redis, and every step is
# safe to repeat). Countdowns stay short (see above); about an hour of retries in all. Other
# Redis errors (a script bug, a wrong type) are not retried: they would fail the same way.
REDIS_RETRY = {"autoretry_for": (redis.ConnectionError, redis.TimeoutError), "retry_backoff": 2,
               "retry_backoff_max": MAX_TASK_COUNTDOWN_SECONDS, "retry_jitter": True, "max_retries": 150}


def _send_sync(merchant_id: int, customer_id: int, pages: int, lease: str) -> None:
    # The read carries the correlation id of the webhook that queued it (a message header,
    # workers/observability.py), whatever task happens to pump the store.
    token = correlation_id.set(sync.correlation_of(runtime(), merchant_id, customer_id) or correlation_id.get())
    try:
        sync_customer.apply_async(args=[merchant_id, customer_id, pages, lease])
    finally:
        correlation_id.reset(token)


def _schedule_pump(merchant_id: int, wait: float) -> None:
    """One pump per store is scheduled at a time, or a sooner one (the flag's TTL outlives the
    countdown, and no longer: a pump lost with its worker frees the flag within seconds)."""
    rt = runtime()
    countdown = min(max(wait, 0.05), MAX_TASK_COUNTDOWN_SECONDS)
    if rt.budget.claim_pump(merchant_id, rt.clock() + countdown, countdown + 5):
        pump_store.apply_async(args=[merchant_id], countdown=countdown)


def pump_soon(merchant_id: int) -> None:
    """Runtime.wake: a store given a backfill slot, or next in line for a fleet-wide backfill
    read (BACKFILL_MAX_READS) that just finished. A wake-up, not the store's scheduled pump:
    it leaves the pump flag alone (pump_store's `woken`)."""
    pump_store.apply_async(args=[merchant_id, True])


wake_with(pump_soon)  # every runtime built in a worker from now on: Runtime.wake


def _list_page(merchant_id: int) -> None:
    backfill_list.apply_async(args=[{"merchant_id": merchant_id}])


def _pump(rt, merchant_id: int) -> int:
    return sync.pump(rt, merchant_id, _send_sync, _schedule_pump, _list_page)


def _publish_delivery(merchant_id: int, customer_id: int, reminder_id: str) -> None:
    deliver_reminder.apply_async(args=[merchant_id, customer_id, reminder_id])


def _request_read(merchant_id: int, customer_id: int) -> None:
    rt = runtime()
    rt.budget.enqueue(merchant_id, customer_id, rt.clock())
    _schedule_pump(merchant_id, 0.05)


@shared_task(name=DRAIN_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def drain_intake(message: dict) -> int:
    """Handle a store's accepted webhooks, batch after batch, from its inbox in Redis
    (service/state/intake.py); one pump for them all. Returns how many were handled."""
    rt = runtime()
    merchant_id = int(message["merchant_id"])
    started, handled, to_read = time.monotonic(), 0, False
    while True:  # until a claim finds nothing: webhooks arriving meanwhile published no drain
        batch = rt.intake.claim(merchant_id, rt.clock())
        if not batch:
            break
        for _, event in batch:
            token = correlation_id.set(event.get("cid"))  # the webhook's, for this event's lines
            try:
                to_read |= sync.accept_event(rt, event) in ("queued", "coalesced")
            finally:
                correlation_id.reset(token)
        rt.intake.done(merchant_id, [raw for raw, _ in batch])
        handled += len(batch)
        if time.monotonic() - started > DRAIN_TIME_BUDGET_SECONDS:
            drain_intake.apply_async(args=[{"merchant_id": merchant_id}])  # the rest in a task of its own
            break
    if to_read:
        _pump(rt, merchant_id)
    return handled


@shared_task(name=HANDLE_EVENT_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def handle_event(message: dict) -> str:
    """One event in the message itself: what the web published before the inbox existed."""
    rt = runtime()
    outcome = sync.accept_event(rt, message)
    if outcome in ("queued", "coalesced"):
        _pump(rt, int(message["merchant_id"]))
    return outcome


@shared_task(name=RECOVER_INTAKE_TASK, ignore_result=True)
def recover_intake() -> int:
    """Beat's look for stores whose accepted webhooks nobody took (a lost drain message, a
    drain whose worker died): a drain for each."""
    rt = runtime()
    stalled = rt.intake.stalled(rt.registry.merchants(), rt.clock())
    for merchant_id in stalled:
        drain_intake.apply_async(args=[{"merchant_id": merchant_id}])
        rt.registry.count(merchant_id, "intake_drains_recovered")
    if stalled:
        log.warning("recover_intake: a drain for %d store(s) whose webhooks waited too long", len(stalled))
    return len(stalled)


@shared_task(name=PUMP_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def pump_store(merchant_id: int, woken: bool = False) -> int:
    rt = runtime()
    if not woken:  # a wake-up (pump_soon) was not scheduled through the store's pump flag:
        rt.budget.pump_started(merchant_id)  # it must not free the flag of the pump that was
    return _pump(rt, merchant_id)


@shared_task(name=PUMP_BACKLOG_TASK, ignore_result=True)
def pump_backlog() -> int:
    """Beat's safety net: every store with reads waiting or in flight is pumped (a dead read's
    lease is reaped here), whatever became of its own pump."""
    rt = runtime()
    total = 0
    backfill.admit(rt, rt.clock())  # backfill slots whose lease ran out go to the stores queued
    for merchant_id in rt.budget.backlog():
        try:
            total += _pump(rt, merchant_id)
        except Exception:
            log.exception("pump of merchant=%s failed; the next tick tries again", merchant_id)
    return total


@shared_task(name=SYNC_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def sync_customer(merchant_id: int, customer_id: int, pages_paid: int = 1, lease: str | None = None) -> str:
    rt = runtime()
    result = sync.sync_customer(rt, merchant_id, customer_id, pages_paid, _publish_delivery, lease=lease)
    if result.outcome == "requeued":
        _schedule_pump(merchant_id, 0.05)
    elif result.outcome != "stale":
        sync.forget_correlation(rt, merchant_id, customer_id)
    return result.outcome


@shared_task(name=DELIVER_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def deliver_reminder(merchant_id, customer_id: int | None = None, reminder_id: str | None = None) -> str:
    rt = runtime()
    if isinstance(merchant_id, dict):
        # A message queued before the ledger existed carried the whole reminder: record it first.
        reminder, keep = merchant_id, int(customer_id or 86400)
        delivery.queue_reminder(rt, reminder, keep, rt.clock(), lambda *args: None)
        merchant_id, customer_id, reminder_id = reminder["merchant_id"], reminder["customer_id"], reminder["reminder_id"]
    return delivery.deliver(rt, int(merchant_id), int(customer_id), reminder_id, rt.clock())


@shared_task(name=FORGET_STORE_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def forget_store(message: dict) -> dict:
    """After app.uninstalled: erase the store's data (workers/lifecycle.py)."""
    rt = runtime()
    return lifecycle.forget_store(rt, int(message["merchant_id"]), message.get("uninstalled_at"))


@shared_task(name=ERASE_UNINSTALLED_TASK, ignore_result=True)
def erase_uninstalled() -> int:
    """Beat, every 5 minutes: uninstalled stores whose erasure never ran (workers/lifecycle.py)."""
    rt = runtime()
    return len(lifecycle.erase_uninstalled(rt, rt.clock()))


@shared_task(name=BACKFILL_LIST_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def backfill_list(message: dict) -> str:
    """One page of a store's customers for its backfill (workers/backfill.py); then a pump."""
    rt = runtime()
    merchant_id = int(message["merchant_id"])
    outcome = backfill.list_page(rt, merchant_id)
    # Listed: read them now. Deferred, no budget or a failure: look again in a moment (beat's
    # pump-backlog is the safety net if this pump is lost).
    _schedule_pump(merchant_id, 0.05 if outcome == "listed" else 2.0)
    return outcome


@shared_task(name=STORE_AUTHORIZED_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def store_authorized(message: dict) -> dict:
    """After app.store.authorize: the store's app settings from Salla, and its backfill."""
    rt = runtime()
    merchant_id = int(message["merchant_id"])
    settings_outcome = app_settings.fetch_and_apply(rt, merchant_id)
    if settings_outcome == "retry" and int(message.get("attempt", 0)) < app_settings.MAX_ATTEMPTS:
        store_authorized.apply_async(args=[{**message, "attempt": int(message.get("attempt", 0)) + 1}],
                                     countdown=min(5 * 2 ** int(message.get("attempt", 0)), MAX_TASK_COUNTDOWN_SECONDS))
        return {"settings": settings_outcome}
    if not rt.settings.backfill_on_authorize:  # BACKFILL_ON_AUTHORIZE=off: operators start it
        return {"settings": settings_outcome, "backfill": "off"}
    started = backfill_runs.start(rt.store, rt.keys, merchant_id, rt.clock(), "app.store.authorize",
                                  rt.settings.backfill_max_stores)
    if started.get("state") == backfill_runs.RUNNING:  # a store queued for a slot is pumped when it gets one
        pump_soon(merchant_id)
    return {"settings": settings_outcome, "backfill": started.get("state")}


@shared_task(name=RESYNC_TASK, ignore_result=True)
def resync() -> dict:
    """Beat, hourly: stale customers read again at low priority; old read times forgotten."""
    rt = runtime()
    counts = backfill.resync(rt, rt.clock())
    for merchant_id in rt.budget.backlog():
        _schedule_pump(merchant_id, 0.05)
    if counts["queued"] or counts["forgotten"]:
        log.info("resync: %s", counts)
    return counts


@shared_task(name=SWEEP_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def sweep() -> int:
    """Beat, every SWEEP_INTERVAL_SECONDS: due deliveries, held reminders and wake-ups."""
    rt = runtime()
    result = reminding.sweep(rt, datetime.fromtimestamp(rt.clock(), timezone.utc), _publish_delivery, _request_read)
    if result.claimed:
        log.info("sweep: claimed=%d evaluated=%d reads_requested=%d deliveries=%d queued=%d", result.claimed,
                 result.evaluated, result.reads_requested, result.deliveries_published, len(result.sent))
    return result.claimed


@shared_task(name=HEARTBEAT_TASK, ignore_result=True)
def heartbeat() -> None:
    rt = runtime()
    rt.store.set(rt.keys.beat_last, datetime.now(timezone.utc).isoformat())
