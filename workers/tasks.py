"""Thin Celery tasks: they unpack the message, call plain functions and decide on retries."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from celery import shared_task

from service.celery_config import HANDLE_EVENT_TASK, HEARTBEAT_TASK
from workers.backoff import retry_countdown
from workers.channels import DeliveryTransientError
from workers.runtime import runtime
from workers.salla_client import SallaTransientError
from workers.sync import sync_customer

log = logging.getLogger(__name__)

# With countdowns capped at 5 minutes, 8 retries span roughly half an hour of Salla trouble.
MAX_RETRIES = 8


@shared_task(name=HANDLE_EVENT_TASK, bind=True, acks_late=True, max_retries=MAX_RETRIES, ignore_result=True)
def handle_event(self, message: dict) -> None:
    rt = runtime()
    try:
        sync_customer(message, settings=rt.settings, store=rt.store, client=rt.client,
                      channels=rt.channels, now=datetime.now(timezone.utc))
    except (SallaTransientError, DeliveryTransientError) as exc:
        countdown = retry_countdown(self.request.retries, getattr(exc, "retry_after", None))
        log.warning("transient failure for merchant=%s customer=%s, retry %d/%d in %.0fs: %s",
                    message.get("merchant_id"), (message.get("customer") or {}).get("id"),
                    self.request.retries + 1, MAX_RETRIES, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown)


@shared_task(name=HEARTBEAT_TASK, ignore_result=True)
def heartbeat() -> None:
    rt = runtime()
    rt.store.set(f"{rt.settings.redis_key_prefix}beat:last", datetime.now(timezone.utc).isoformat())
