"""The baselines of bench/workers.py: Celery tasks that do nothing, or one GET, on the same
broker, settings and pool as the service's workers (`celery -A bench.bare_tasks worker ...`)."""
from __future__ import annotations

import threading

import requests
from celery import Celery

from service.config.celery_config import celery_config
from service.config.settings import Settings

app = Celery("bare")
app.conf.update(celery_config(Settings.from_env()))
app.conf.task_routes = {}
app.conf.task_default_queue = "bare"
_local = threading.local()  # a keep-alive session per thread, as the service's Salla client has


@app.task(name="bare.noop", acks_late=True, ignore_result=True)
def noop(merchant_id: int, n: int) -> None:
    return None


@app.task(name="bare.get", acks_late=True, ignore_result=True)
def get(url: str, token: str | None = None) -> int:
    # With the store's bearer token, so that the sandbox answers the same page (200, the
    # customer's lots) as it does a read, not a short 401.
    session = getattr(_local, "session", None) or setattr(_local, "session", requests.Session()) or _local.session
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return session.get(url, headers=headers, timeout=10).status_code


@app.task(name="bare.post", acks_late=True, ignore_result=True)
def post(url: str, body: str, headers: dict) -> int:
    # The signed body and headers a delivery's webhook channel sends (made by bench/workers.py
    # with the channel's own code), POSTed as the channel does: the baseline of a delivery.
    session = getattr(_local, "session", None) or setattr(_local, "session", requests.Session()) or _local.session
    return session.post(url, data=body.encode("utf-8"), headers=headers, timeout=10, allow_redirects=False).status_code
