"""The backfill with real parts: a sandbox store with 1,000 customers over 17 pages, read under
its budget by a real Celery worker, with an event-driven read served while it runs and the
worker restarted in the middle."""
from __future__ import annotations

import json
import os
import signal

import pytest
import requests

from devkit.processes import celery_beat, celery_worker
from devkit.sandbox import DEFAULT_MERCHANT_ID, StoreSpec, create_app as create_sandbox, serve_in_thread
from service.web.app import create_app
from service.config.settings import Settings
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, sample
from tests.integration.conftest import SANDBOX_TOKEN, wait_until

pytestmark = pytest.mark.integration
M = DEFAULT_MERCHANT_ID
FIRST, COUNT = 200_000, 1000
EVENT_CUSTOMER = FIRST + COUNT - 1  # on the last page: an event reads it before the backfill lists it
ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}


@pytest.fixture
def limited_sandbox():
    # Salla's limits, scaled down: 100 requests per 2 s and 500 per 10 s (50 a second).
    store = StoreSpec(M, SANDBOX_TOKEN, limits=True, plan_per_minute=100, plan_window_seconds=2,
                      customer_limit=500, customer_window_seconds=10)
    with serve_in_thread(create_sandbox(customers={}, token=None, stores=[store])) as server:
        requests.put(f"{server.url}/_sandbox/customers/seed",
                     json={"count": COUNT, "start_id": FIRST, "lots_every": 100}).raise_for_status()
        yield server


def order_created(customer_id: int) -> bytes:
    body = sample("order.created.json")
    body["merchant"] = M
    body["data"]["customer"]["id"] = customer_id
    return json.dumps(body).encode()


def test_a_thousand_customers_backfilled_once_each_under_the_budget_events_first_resumed_after_a_restart(
        limited_sandbox, service_env, redis_url, tmp_path):
    env = {**service_env, "SALLA_API_BASE_URL": limited_sandbox.url, "REMINDER_CHANNELS": "log",
           "SALLA_PLAN_LIMIT": "100", "SALLA_PLAN_WINDOW_SECONDS": "2", "SALLA_CUSTOMER_LIMIT": "500",
           "SALLA_CUSTOMER_WINDOW_SECONDS": "10", "ADMIN_TOKEN": "ops-admin-token-for-the-tests-0123456789", "SYNC_DEBOUNCE_SECONDS": "0.2"}
    env.pop("REMINDER_WEBHOOK_URL"), env.pop("REMINDER_WEBHOOK_SECRET")
    worker = celery_worker(env, tmp_path / "worker.log", concurrency=2).start()
    beat = celery_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule").start()
    web = serve_in_thread(create_app(Settings.from_env(env)))
    try:
        def progress():
            return requests.get(f"{web.url}/admin/stores/{M}/backfill", headers=ADMIN, timeout=5).json()["backfill"]

        started = requests.post(f"{web.url}/admin/stores/{M}/backfill", headers=ADMIN, timeout=5)
        assert started.status_code == 202 and started.json()["started"] is True
        again = requests.post(f"{web.url}/admin/stores/{M}/backfill", headers=ADMIN, timeout=5)
        assert again.status_code == 200 and again.json()["started"] is False  # one run at a time

        # While it runs, a webhook's customer is read at once, ahead of the backfill's queue.
        wait_until(lambda: progress()["customers_read"] >= 150, timeout=60, message="the backfill under way")
        response = requests.post(web.url + "/webhooks/salla", data=order_created(EVENT_CUSTOMER), timeout=10,
                                 headers={"Content-Type": "application/json",
                                          "X-Salla-Signature": sign(order_created(EVENT_CUSTOMER), WEBHOOK_SECRET)})
        assert response.json() == {"status": "queued"}

        def event_read():
            stats = requests.get(f"{limited_sandbox.url}/_sandbox/stats", timeout=5).json()
            return stats["by_customer"].get(str(EVENT_CUSTOMER))
        wait_until(event_read, timeout=10, message="the event-driven read")
        during = progress()
        assert during["state"] == "running" and during["customers_read"] < 600, during

        # Stop the worker in the middle and start another. SIGTERM to the worker's main process
        # only, as docker stop and a deploy do: Celery's warm shutdown lets the reads in hand
        # finish. (A kill -9 mid-read repeats that one read when its lease runs out: the
        # at-least-once of every read, README "Backfill".)
        wait_until(lambda: progress()["customers_read"] >= 400, timeout=60, message="half-way")
        os.kill(worker.process.pid, signal.SIGTERM)
        worker.process.wait(timeout=90)  # a loaded machine (make test runs two pytest workers)
        worker.stop()
        halfway = progress()
        assert halfway["state"] == "running" and halfway["customers_read"] < COUNT - 100, halfway
        assert halfway["estimated_seconds_left"] > 0
        worker = celery_worker(env, tmp_path / "worker2.log", concurrency=2).start()
        try:
            wait_until(lambda: progress()["state"] == "done", timeout=120, interval=0.5, message="the backfill done")
        except AssertionError:
            raise AssertionError(f"not done: {progress()}") from None

        done = progress()
        stats = requests.get(f"{limited_sandbox.url}/_sandbox/stats", timeout=5).json()
        merchant_api = requests.get(f"{limited_sandbox.url}/_sandbox/merchant-api", timeout=5).json()
        reads = {int(c): n for c, n in stats["by_customer"].items()}
        assert sorted(reads) == list(range(FIRST, FIRST + COUNT))  # every customer read
        assert stats["stores"][str(M)]["rate_limited"] == 0 and "429" not in stats["by_status"], stats["by_status"]
        assert set(stats["by_status"]) == {"200"}, stats["by_status"]  # no refusal that a retry would repeat
        assert set(reads.values()) == {1}, {c: n for c, n in reads.items() if n != 1}  # none twice
        pages = merchant_api["list_pages"]
        assert sorted(int(k.split(":")[1]) for k in pages) == list(range(1, 18)) and set(pages.values()) == {1}
        assert done["customers_read"] + done["covered_by_events"] == COUNT and done["covered_by_events"] == 1
        assert done["customers_listed"] == COUNT - 1 and done["reminders_scheduled"] == COUNT // 100
        assert done["estimated_seconds_left"] == 0 and done["waiting"] == 0 and done["reading"] == 0
        # The store's summary shows it too.
        summary = requests.get(f"{web.url}/admin/stores/{M}", headers=ADMIN, timeout=5).json()
        assert summary["backfill"]["state"] == "done"
    finally:
        web.stop()
        beat.stop()
        worker.stop()
