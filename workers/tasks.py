"""Thin Celery tasks: unpack, call plain functions in workers.sync, publish follow-up tasks.

Reads are paced by the store's budget (workers/budget.py), not by Celery retries: a task that
cannot read now puts the customer back in the store's queue and returns, so no worker slot
ever sleeps waiting for budget. Only reminder delivery uses Celery's retry, with backoff.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import redis
from celery import shared_task

from service.celery_config import (DELIVER_TASK, FORGET_STORE_TASK, HANDLE_EVENT_TASK, HEARTBEAT_TASK,
                                   PUMP_BACKLOG_TASK, PUMP_TASK, SWEEP_TASK, SYNC_TASK)
from workers import reminding, sync
from workers.backoff import MAX_COUNTDOWN_SECONDS, retry_countdown
from workers.channels import DeliveryTransientError
from workers.delivery import deliver
from workers.runtime import runtime

log = logging.getLogger(__name__)

# Delivery retries: backoff doubling from 2 s up to 15 minutes; 12 tries span about an hour.
MAX_RETRIES = 12

# A Redis outage inside a task: retry the task (our state lives in Redis; nothing was done
# that a rerun would repeat, thanks to the dedupe keys). Same backoff bounds as above.
REDIS_RETRY = {"autoretry_for": (redis.RedisError,), "retry_backoff": 2, "retry_backoff_max": MAX_COUNTDOWN_SECONDS,
               "retry_jitter": True, "max_retries": MAX_RETRIES}


def _send_sync(merchant_id: int, customer_id: int, pages: int) -> None:
    sync_customer.apply_async(args=[merchant_id, customer_id, pages])


def _schedule_pump(merchant_id: int, wait: float) -> None:
    """At most one pump per store is scheduled at a time (the flag's TTL outlives the countdown)."""
    rt = runtime()
    countdown = min(max(wait, 0.05), MAX_COUNTDOWN_SECONDS)
    flag = f"{rt.settings.redis_key_prefix}sync:{merchant_id}:pump"
    if rt.store.set(flag, "1", nx=True, px=int((countdown + 30) * 1000)):
        pump_store.apply_async(args=[merchant_id], countdown=countdown)


def _send_reminder(reminder: dict, keep_seconds: int) -> None:
    deliver_reminder.apply_async(args=[reminder, keep_seconds])


def _request_read(merchant_id: int, customer_id: int) -> None:
    rt = runtime()
    rt.budget.enqueue(merchant_id, customer_id, rt.clock())
    _schedule_pump(merchant_id, 0.05)


@shared_task(name=HANDLE_EVENT_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def handle_event(message: dict) -> str:
    rt = runtime()
    outcome = sync.accept_event(rt, message)
    if outcome in ("queued", "coalesced"):
        sync.pump(rt, int(message["merchant_id"]), _send_sync, _schedule_pump)
    return outcome


@shared_task(name=PUMP_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def pump_store(merchant_id: int) -> int:
    rt = runtime()
    rt.store.delete(f"{rt.settings.redis_key_prefix}sync:{merchant_id}:pump")
    return sync.pump(rt, merchant_id, _send_sync, _schedule_pump)


@shared_task(name=PUMP_BACKLOG_TASK, ignore_result=True)
def pump_backlog() -> int:
    """Beat's safety net: a pump message lost with a dead worker delays a store by this much."""
    rt = runtime()
    return sum(sync.pump(rt, merchant_id, _send_sync, _schedule_pump) for merchant_id in rt.budget.backlog())


@shared_task(name=SYNC_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def sync_customer(merchant_id: int, customer_id: int, pages_paid: int = 1) -> str:
    rt = runtime()
    result = sync.sync_customer(rt, merchant_id, customer_id, pages_paid, _send_reminder)
    if result.outcome == "requeued":
        _schedule_pump(merchant_id, 0.05)
    return result.outcome


@shared_task(name=DELIVER_TASK, bind=True, acks_late=True, ignore_result=True, **REDIS_RETRY)
def deliver_reminder(self, reminder: dict, keep_seconds: int) -> list[str]:
    rt = runtime()
    m = reminder["merchant_id"]
    # Queued or retried deliveries check again: an uninstall, a pause or an opt-out since wins.
    if (rt.registry.is_uninstalled(m) or rt.registry.config(m).get("paused")
            or rt.profiles.load(m, reminder["customer_id"]).notifications_enabled is False):
        rt.registry.count(m, "deliveries_withheld")
        return []
    try:
        report = deliver(reminder, rt.channels, rt.store, rt.settings.redis_key_prefix, keep_seconds)
    except DeliveryTransientError as exc:
        countdown = retry_countdown(self.request.retries)
        log.warning("reminder %s: transient delivery failure, retry %d/%d in %.0fs: %s", reminder["reminder_id"],
                    self.request.retries + 1, MAX_RETRIES, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown)
    reminding.record_delivery(rt, reminder, report, keep_seconds)
    return report.sent


@shared_task(name=FORGET_STORE_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def forget_store(message: dict) -> dict:
    """After app.uninstalled: drop the store's queued reads (and count them)."""
    rt = runtime()
    merchant_id = int(message["merchant_id"])
    dropped = {"dropped_syncs": rt.budget.drop_store(merchant_id),
               "dropped_reminders": reminding.due_set(rt).cancel_store(merchant_id)}
    for name, amount in dropped.items():
        if amount:
            rt.registry.count(merchant_id, name, amount)
    log.info("merchant=%s uninstalled: %s", merchant_id, dropped)
    return dropped


@shared_task(name=SWEEP_TASK, acks_late=True, ignore_result=True, **REDIS_RETRY)
def sweep() -> int:
    """Beat, every SWEEP_INTERVAL_SECONDS: the due reminders and wake-ups."""
    rt = runtime()
    result = reminding.sweep(rt, datetime.fromtimestamp(rt.clock(), timezone.utc), _send_reminder, _request_read)
    if result.claimed:
        log.info("sweep: claimed=%d evaluated=%d reads_requested=%d sent=%d", result.claimed, result.evaluated,
                 result.reads_requested, len(result.sent))
    return result.claimed


@shared_task(name=HEARTBEAT_TASK, ignore_result=True)
def heartbeat() -> None:
    rt = runtime()
    rt.store.set(f"{rt.settings.redis_key_prefix}beat:last", datetime.now(timezone.utc).isoformat())
