"""The baselines of bench/workers.py: Celery tasks that do nothing, or one GET, on the same
broker, settings and pool as the service's workers (`celery -A bench.bare_tasks worker ...`)."""
from __future__ import annotations

import threading

import requests
from celery import Celery

from service.celery_config import celery_config
from service.settings import Settings

app = Celery("bare")
app.conf.update(celery_config(Settings.from_env()))
app.conf.task_routes = {}
app.conf.task_default_queue = "bare"
_local = threading.local()  # a keep-alive session per thread, as the service's Salla client has


@app.task(name="bare.noop", acks_late=True, ignore_result=True)
def noop(merchant_id: int, n: int) -> None:
    return None


@app.task(name="bare.get", acks_late=True, ignore_result=True)
def get(url: str) -> int:
    session = getattr(_local, "session", None) or setattr(_local, "session", requests.Session()) or _local.session
    return session.get(url, timeout=10).status_code
