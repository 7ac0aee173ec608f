"""Publishes webhook events to the workers by task name (the web never imports worker code).

Works with either broker (service/config/celery_config.py). Whatever goes wrong while publishing is
QueueUnavailable within about two seconds, so the webhook answers 503 and Salla retries.
"""
from __future__ import annotations

from celery import Celery

from service.config.celery_config import HANDLE_EVENT_TASK, broker_is_redis, celery_config
from service.config.settings import Settings

# Longest a publish may wait for RabbitMQ's confirm (publisher confirms are on) before the
# webhook gives up with a 503. A message confirmed later is a duplicate at worst: Salla's retry
# is accepted because the dedupe key is removed on failure, and the tasks are idempotent.
CONFIRM_TIMEOUT_SECONDS = 2.0


class QueueUnavailable(RuntimeError):
    """The broker did not take the message; the webhook answers 503 so that Salla retries."""


class EventQueue:
    def __init__(self, settings: Settings):
        self._celery = Celery("webhook-producer", set_as_current=False)
        self._celery.conf.update(celery_config(settings))
        # Give up connecting to a dead broker within about a second (Celery's default is 4 s,
        # and redis-py's retries come on top) instead of holding a web worker.
        self._celery.conf.broker_connection_timeout = 1
        options = {
            **self._celery.conf.broker_transport_options,
            # kombu's connection retries (Connection.ensure_connection): one more try after
            # half a second, so a blip is not a 503 but a dead broker is one within a second
            # (kombu's default waits 2 s before its retry).
            "max_retries": 1,
            "interval_start": 0.5,
        }
        # A broker that accepts connections but does not answer is a 503 within about two
        # seconds too: bound every read and write on the producer's socket. Only here: the
        # workers keep the shared values (a worker may wait; the web must answer Salla).
        if broker_is_redis(settings.broker_url):
            options.update(socket_connect_timeout=1, socket_timeout=2)
        else:
            options.update(read_timeout=2, write_timeout=2)
        self._celery.conf.broker_transport_options = options

    def enqueue(self, message: dict, task: str = HANDLE_EVENT_TASK) -> None:
        try:
            # retry=False: answer Salla within its 30 s instead of retrying a dead broker here;
            # Salla itself retries a non-2xx delivery. confirm_timeout only applies to RabbitMQ.
            self._celery.send_task(task, args=[message], retry=False, confirm_timeout=CONFIRM_TIMEOUT_SECONDS)
        except Exception as exc:  # kombu, py-amqp, redis and socket errors alike
            raise QueueUnavailable(f"could not publish to the broker: {type(exc).__name__}") from exc

    def publish(self, task: str, args: list) -> None:
        """Any task by name with plain arguments (a delivery to go on with: service/web/callbacks.py;
        the pump after a backfill starts: the admin API and CLI)."""
        try:
            self._celery.send_task(task, args=args, retry=False, confirm_timeout=CONFIRM_TIMEOUT_SECONDS)
        except Exception as exc:
            raise QueueUnavailable(f"could not publish to the broker: {type(exc).__name__}") from exc
