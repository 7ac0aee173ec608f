"""Install storms with real parts (issue 18, goal 4): five stores installed together, each with
its own token and Salla budget in the sandbox, BACKFILL_MAX_STORES=2, a real Celery worker and
real Redis. Never more than two backfill at once, the others wait in line, and all five finish,
each customer read once per store."""
from __future__ import annotations

import json

import pytest
import requests

from devkit.processes import celery_worker
from devkit.sandbox import StoreSpec, create_app as create_sandbox, serve_in_thread
from service.web.app import create_app
from service.config.settings import Settings
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

STORES = [501, 502, 503, 504, 505]
FIRST, COUNT = 300_000, 90  # two pages of GET /customers a store
ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}


@pytest.fixture
def sandbox():
    # Each store its own budget, Salla's scaled down: 100 requests per 2 s and 500 per 10 s.
    specs = [StoreSpec(m, f"access-{m}", refresh_token=f"refresh-{m}", limits=True, plan_per_minute=100,
                       plan_window_seconds=2, customer_limit=500, customer_window_seconds=10) for m in STORES]
    with serve_in_thread(create_sandbox(customers={}, token=None, stores=specs)) as server:
        requests.put(f"{server.url}/_sandbox/customers/seed",
                     json={"count": COUNT, "start_id": FIRST, "lots_every": 0}).raise_for_status()
        yield server


def authorize(web, sandbox, merchant: int) -> None:
    view = requests.get(f"{sandbox.url}/_sandbox/stores/{merchant}", timeout=5).json()
    body = json.dumps({"event": "app.store.authorize", "merchant": merchant, "created_at": "2026-11-25 10:00:00",
                       "data": {"access_token": view["access_token"], "refresh_token": view["refresh_token"],
                                "expires": view["access_expires_at"], "scope": view["scope"],
                                "token_type": "bearer"}}).encode()
    answer = requests.post(web.url + "/webhooks/salla", data=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Salla-Signature": sign(body, WEBHOOK_SECRET)})
    assert answer.json() == {"status": "stored"}


def test_a_cap_of_two_with_five_stores_never_backfills_more_than_two_and_all_five_finish(
        sandbox, service_env, tmp_path):
    """Issue 18 goal 4: the cap with a real worker and Redis; slots pass on as runs finish."""
    env = {**service_env, "SALLA_API_BASE_URL": sandbox.url, "SALLA_ACCESS_TOKEN": "",
           "SALLA_ACCOUNTS_URL": sandbox.url, "SALLA_CLIENT_ID": "sandbox-client",
           "SALLA_CLIENT_SECRET": "sandbox-client-secret", "REMINDER_CHANNELS": "log",
           "SALLA_PLAN_LIMIT": "100", "SALLA_PLAN_WINDOW_SECONDS": "2", "SALLA_CUSTOMER_LIMIT": "500",
           "SALLA_CUSTOMER_WINDOW_SECONDS": "10", "ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
           "BACKFILL_ON_AUTHORIZE": "on", "BACKFILL_MAX_STORES": "2"}
    env.pop("REMINDER_WEBHOOK_URL"), env.pop("REMINDER_WEBHOOK_SECRET")
    worker = celery_worker(env, tmp_path / "worker.log", concurrency=2).start()
    web = serve_in_thread(create_app(Settings.from_env(env)))
    try:
        def fleet():
            return requests.get(f"{web.url}/admin/backfills", headers=ADMIN, timeout=5).json()

        def progress(merchant):
            return requests.get(f"{web.url}/admin/stores/{merchant}/backfill", headers=ADMIN, timeout=5).json()["backfill"]

        for merchant in STORES:
            authorize(web, sandbox, merchant)
        most, seen_queued, views = 0, set(), {}

        def all_done():
            nonlocal most
            now = fleet()
            most = max(most, len(now["running"]))
            assert len(now["running"]) <= 2, now
            seen_queued.update(q["merchant_id"] for q in now["queued"])
            views.update({m: progress(m) for m in STORES})
            # The views are read one store at a time: only when no slot passed on meanwhile (the
            # slots as before) are they one moment's, else a store that just finished may read
            # `running` beside the one that took its slot.
            if fleet()["running"] == now["running"]:
                running = [m for m, view in views.items() if view["state"] == "running"]
                assert len(running) <= 2, views
            return all(view["state"] == "done" for view in views.values())

        try:
            wait_until(all_done, timeout=150, interval=0.2, message="every store's backfill done")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {views}\n{worker.log_text()[-3000:]}") from None
        assert most == 2 and len(seen_queued) >= 3, (most, seen_queued)  # the cap was reached and waited on
        assert fleet() == {"max_stores": 2, "running": [], "queued": [], "queued_total": 0}
        # A run is done once nothing waits; its last read's count may land a moment after.
        def counted():
            views.update({m: progress(m) for m in STORES})
            return all(views[m]["customers_read"] == COUNT for m in STORES)
        wait_until(counted, timeout=15, interval=0.2, message=f"every read counted: {views}")
        stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
        assert set(stats["by_customer"]) == {str(c) for c in range(FIRST, FIRST + COUNT)}
        assert set(stats["by_customer"].values()) == {len(STORES)}  # each customer read once per store
        for merchant in STORES:
            assert views[merchant]["customers_read"] == COUNT and views[merchant]["reads_failed"] == 0, views[merchant]
            assert stats["stores"][str(merchant)]["rate_limited"] == 0
        # The three that waited started only as the first ones finished.
        started = sorted((views[m]["started_at"], m) for m in STORES)
        finished = sorted(views[m]["finished_at"] for m in STORES)
        assert started[2][0] >= finished[0] and started[4][0] >= finished[2] - 1
    finally:
        web.stop()
        worker.stop()
