"""Publishes webhook events to the workers by task name (the web never imports worker code)."""
from __future__ import annotations

from celery import Celery

from service.celery_config import HANDLE_EVENT_TASK, celery_config
from service.settings import Settings


class QueueUnavailable(RuntimeError):
    """The broker did not take the message; the webhook answers 503 so that Salla retries."""


class EventQueue:
    def __init__(self, settings: Settings):
        self._celery = Celery("webhook-producer", set_as_current=False)
        self._celery.conf.update(celery_config(settings))
        # Give up connecting to a dead broker within about two seconds (the default, 4 s with
        # redis-py's retries on top, would hold a web worker for over 6 s per delivery).
        self._celery.conf.broker_connection_timeout = 1

    def enqueue(self, message: dict, task: str = HANDLE_EVENT_TASK) -> None:
        try:
            # retry=False: answer Salla within its 30 s instead of retrying a dead broker here;
            # Salla itself retries a non-2xx delivery.
            self._celery.send_task(task, args=[message], retry=False)
        except Exception as exc:  # kombu raises OperationalError and redis errors alike
            raise QueueUnavailable(f"could not publish to the broker: {type(exc).__name__}") from exc
