"""Celery settings shared by the web process (which only publishes) and the workers.

One place, so the producer and the consumers agree on serializer, queue and broker options.
Each non-default setting says why, with a link to Celery's configuration reference:
https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""
from __future__ import annotations

from service.settings import Settings

# The web process enqueues by name and never imports worker code.
HANDLE_EVENT_TASK = "workers.tasks.handle_event"
FORGET_STORE_TASK = "workers.tasks.forget_store"
HEARTBEAT_TASK = "workers.tasks.heartbeat"
PUMP_TASK = "workers.tasks.pump_store"
PUMP_BACKLOG_TASK = "workers.tasks.pump_backlog"
SYNC_TASK = "workers.tasks.sync_customer"
DELIVER_TASK = "workers.tasks.deliver_reminder"
SWEEP_TASK = "workers.tasks.sweep"
EVENTS_QUEUE = "events"

# Redis broker: an unacknowledged task is re-delivered after this long. Every retry countdown
# we use stays well under it, and nothing is ever scheduled as a long ETA task (a task delayed
# past it runs twice: celery#2599, kombu#337).
VISIBILITY_TIMEOUT_SECONDS = 3600


def celery_config(settings: Settings) -> dict:
    # Without it the worker dies when Redis restarts under load (the module says why).
    from service.kombu_workarounds import guard_detached_redis_channels
    guard_detached_redis_channels()
    return {
        "broker_url": settings.broker_url,
        # #broker-transport-options: fail fast when Redis is gone (the webhook answers 503
        # so Salla retries) instead of hanging a web worker on a dead socket.
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "broker_connection_retry_on_startup": True,
        # #task-serializer / #accept-content: JSON only, never pickle from the network.
        "task_serializer": "json",
        "accept_content": ["json"],
        # #task-ignore-result: nobody reads results; don't fill Redis with them.
        "task_ignore_result": True,
        # #task-acks-late / #task-reject-on-worker-lost: a worker killed mid-task leaves the
        # message to be redelivered; tasks are idempotent (dedupe keys), so that is safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # #worker-prefetch-multiplier: one task at a time per process, so a long Salla read
        # does not hold other tasks hostage in a prefetch buffer.
        "worker_prefetch_multiplier": 1,
        "task_default_queue": EVENTS_QUEUE,
        # #worker-send-task-events / #task-send-sent-event: Flower shows tasks live.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            # Operators can see that beat is alive (its last tick is in /readyz).
            "heartbeat": {"task": HEARTBEAT_TASK, "schedule": 60.0},
            # A store's pump is normally scheduled by itself; this recovers one that was lost.
            "pump-backlog": {"task": PUMP_BACKLOG_TASK, "schedule": 30.0},
            # Reminders held for quiet hours and stage wake-ups live in a Redis sorted set,
            # never in ETA tasks (those run twice past the visibility timeout on Redis).
            "sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_seconds},
        },
    }
