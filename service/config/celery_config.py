"""Celery settings shared by the web process (which only publishes) and the workers.

One place, so the producer and the consumers agree on serializer, queue and broker options.
Each non-default setting says why, with a link to Celery's configuration reference:
https://docs.celeryq.dev/en/stable/userguide/configuration.html

The broker is Redis or RabbitMQ, chosen by CELERY_BROKER_URL's scheme; Redis always holds the
service's own state (dedupe keys, ledger, due set, budget). What each gives when a worker is
killed: RabbitMQ redelivers its unacknowledged messages as soon as the worker's connection
drops; Redis only after the visibility timeout, when a live worker's periodic scan finds them.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlparse

from service.config.settings import Settings

# The web process enqueues by name and never imports worker code.
HANDLE_EVENT_TASK = "workers.tasks.handle_event"
DRAIN_TASK = "workers.tasks.drain_intake"
FORGET_STORE_TASK = "workers.tasks.forget_store"
HEARTBEAT_TASK = "workers.tasks.heartbeat"
PUMP_TASK = "workers.tasks.pump_store"
PUMP_BACKLOG_TASK = "workers.tasks.pump_backlog"
RECOVER_INTAKE_TASK = "workers.tasks.recover_intake"
SYNC_TASK = "workers.tasks.sync_customer"
DELIVER_TASK = "workers.tasks.deliver_reminder"
SWEEP_TASK = "workers.tasks.sweep"
STORE_AUTHORIZED_TASK = "workers.tasks.store_authorized"
BACKFILL_LIST_TASK = "workers.tasks.backfill_list"
RESYNC_TASK = "workers.tasks.resync"
ERASE_UNINSTALLED_TASK = "workers.tasks.erase_uninstalled"

# Queues by kind, each with a worker command of its own (Procfile, docker-compose.yml), so
# that a slow Salla never delays deliveries and a burst of webhooks never delays reads.
INTAKE_QUEUE, READS_QUEUE, DELIVERIES_QUEUE, SWEEP_QUEUE = "intake", "reads", "deliveries", "sweep"
LEGACY_QUEUE = "events"  # the one queue of earlier releases: the intake worker drains it too
TASK_ROUTES = {
    DRAIN_TASK: {"queue": INTAKE_QUEUE},
    HANDLE_EVENT_TASK: {"queue": INTAKE_QUEUE},
    RECOVER_INTAKE_TASK: {"queue": INTAKE_QUEUE},
    FORGET_STORE_TASK: {"queue": INTAKE_QUEUE},
    ERASE_UNINSTALLED_TASK: {"queue": INTAKE_QUEUE},
    STORE_AUTHORIZED_TASK: {"queue": INTAKE_QUEUE},
    BACKFILL_LIST_TASK: {"queue": READS_QUEUE},
    RESYNC_TASK: {"queue": SWEEP_QUEUE},
    PUMP_TASK: {"queue": READS_QUEUE},
    PUMP_BACKLOG_TASK: {"queue": READS_QUEUE},
    SYNC_TASK: {"queue": READS_QUEUE},
    DELIVER_TASK: {"queue": DELIVERIES_QUEUE},
    SWEEP_TASK: {"queue": SWEEP_QUEUE},
    HEARTBEAT_TASK: {"queue": SWEEP_QUEUE},
}

REDIS_BROKER_SCHEMES = ("redis", "rediss", "unix")
AMQP_BROKER_SCHEMES = ("amqp", "amqps", "pyamqp")

# Redis broker: a message a worker took and has not acknowledged is handed out again once it
# is this old. Short, so that the work of a killed worker resumes within two minutes: back in
# the queue after at most VISIBILITY_TIMEOUT_SECONDS + REDIS_RESTORE_INTERVAL_SECONDS (65 s).
# The price: anything a live worker holds unacknowledged for longer runs twice (celery#2599,
# kombu#337). A worker holds a countdown/ETA task from the moment it is sent until it has run,
# so countdowns stay at or under MAX_TASK_COUNTDOWN_SECONDS and a task must finish within the
# rest of the minute; longer waits live in Redis sorted sets (the due set, the store's queue).
# https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
VISIBILITY_TIMEOUT_SECONDS = 60
# The longest countdown/ETA any task may be published with (see above: half the visibility
# timeout, leaving the other half for the task's own run and its wait for a free process).
MAX_TASK_COUNTDOWN_SECONDS = 30
# How often each worker scans for messages past the visibility timeout (kombu 5.7's Redis
# transport; its defaults, 10 s and every 10th call, scan about every 100 s).
REDIS_RESTORE_INTERVAL_SECONDS = 5


def broker_is_redis(broker_url: str) -> bool:
    return urlparse(broker_url).scheme in REDIS_BROKER_SCHEMES


def kombu_broker_url(broker_url: str) -> str:
    """The broker URL in kombu's spelling. redis-py's `unix:///path?db=N` (what REDIS_URL takes)
    is `redis+socket:///path?virtual_host=N` to kombu, which has no `unix` transport."""
    parts = urlparse(broker_url)
    if parts.scheme != "unix":
        return broker_url
    query = parse_qs(parts.query)
    db = query.pop("db", [None])[0]
    if db is not None:
        query["virtual_host"] = [db]
    auth = f"{parts.netloc}" if parts.netloc else ""
    encoded = urlencode({k: v[0] for k, v in query.items()})
    return f"redis+socket://{auth}{parts.path}" + (f"?{encoded}" if encoded else "")


def broker_transport_options(broker_url: str) -> dict:
    """#broker-transport-options, by the broker's kind; each key is a non-default choice."""
    if broker_is_redis(broker_url):
        # kombu's Redis transport options:
        # https://docs.celeryq.dev/projects/kombu/en/main/reference/kombu.transport.redis.html
        return {
            # See VISIBILITY_TIMEOUT_SECONDS: a killed worker's messages come back within ~65 s.
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            # Scan for them every 5 s, on every call (throttle 1), instead of every ~100 s.
            "unacked_restore_interval": REDIS_RESTORE_INTERVAL_SECONDS,
            "unacked_restore_throttle": 1,
            # The scan holds a Redis lock for milliseconds; a worker killed while holding it
            # would block every scan for the default 300 s, longer than our two-minute bound.
            # Two scans that overlap are safe (each restore is a WATCH/MULTI transaction).
            "unacked_mutex_expire": 30,
            # Fail fast when Redis is gone (the webhook answers 503 so Salla retries) instead
            # of hanging a web worker, or the worker's ack, on a dead socket.
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        }
    # py-amqp (RabbitMQ): https://docs.celeryq.dev/projects/kombu/en/main/reference/kombu.transport.pyamqp.html
    # Nothing here bounds redelivery: RabbitMQ requeues a consumer's unacknowledged messages the
    # moment its connection closes (a killed worker's socket closes at once; a silent network
    # loss is caught by the heartbeat, #broker-heartbeat, 120 s by default). RabbitMQ's own
    # bound, consumer_timeout (30 min by default: https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout),
    # closes the channel of a consumer that holds a delivery longer; ours are held for at most
    # MAX_TASK_COUNTDOWN_SECONDS plus a task's run (seconds), so the default is left alone.
    return {
        # Publisher confirms (https://www.rabbitmq.com/docs/confirms): a publish returns only
        # once RabbitMQ has taken the message, and raises when it refuses it, so the web's
        # 200 means "queued" and a failure is a 503, never a silent loss.
        "confirm_publish": True,
    }


def celery_config(settings: Settings) -> dict:
    if broker_is_redis(settings.broker_url):
        # Without it the worker dies when Redis restarts under load (the module says why).
        from service.config.kombu_workarounds import guard_detached_redis_channels, reuse_redis_clients
        guard_detached_redis_channels()
        reuse_redis_clients()  # a publish without building a Redis client (bench/workers.py)
    return {
        "broker_url": kombu_broker_url(settings.broker_url),
        "broker_transport_options": broker_transport_options(settings.broker_url),
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
        # #task-routes: each kind of work on its queue; anything unrouted goes with the intake.
        "task_routes": TASK_ROUTES,
        "task_default_queue": INTAKE_QUEUE,
        # #worker-send-task-events: Flower shows tasks live, from the workers' events
        # (received, started, succeeded). #task-send-sent-event stays off: it was a second
        # broker write per published task, a third of the web's time per webhook
        # (bench/ingest.py), and it only adds Flower's "sent" state.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        # Beat writes its own liveness to Redis as it ticks (workers/beat.py; /readyz says up or down, /admin/health its age).
        # #beat-scheduler
        "beat_scheduler": "workers.beat:LivenessScheduler",
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            # Operators can see that beat is alive (its last tick is in /admin/health).
            "heartbeat": {"task": HEARTBEAT_TASK, "schedule": 60.0},
            # A store's pump is normally scheduled by itself; this recovers one that was lost.
            "pump-backlog": {"task": PUMP_BACKLOG_TASK, "schedule": 15.0},
            # Accepted webhooks whose message the broker lost are handed to it again
            # (service/state/intake.py).
            "recover-intake": {"task": RECOVER_INTAKE_TASK, "schedule": 15.0},
            # Reminders held for quiet hours and stage wake-ups live in a Redis sorted set,
            # never in ETA tasks (those run twice past the visibility timeout on Redis).
            "sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_seconds},
            # Customers not read for RESYNC_AFTER_DAYS are read again at low priority, and
            # read times past DATA_RETENTION_DAYS are forgotten (workers/backfill.py).
            "resync": {"task": RESYNC_TASK, "schedule": 3600.0},
            # Uninstalled stores whose erasure never ran (the broker was down through Salla's
            # retries of app.uninstalled) are erased (workers/lifecycle.py).
            "erase-uninstalled": {"task": ERASE_UNINSTALLED_TASK, "schedule": 300.0},
        },
    }
