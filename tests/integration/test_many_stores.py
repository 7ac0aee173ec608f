"""Many stores with real tokens against the sandbox: a real worker, real Redis, real HTTP.

Stores in the sandbox:
  111  an ordinary store (token A), the one most tests use
  222  a second store, with its own token
  333  a token without customers.read (Salla answers 401 "scopes")
  444  no Customer Loyalty app (Salla answers 403)
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from devkit.processes import celery_worker
from devkit.sandbox import StoreSpec, create_app as create_sandbox, serve_in_thread
from service.domain.signatures import sign
from tests.conftest import TOKEN_KEY, WEBHOOK_SECRET, sample
from service.state.keys import KEPT_AFTER_UNINSTALL, Keys
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

A, B, NO_SCOPE, NO_LOYALTY = 111, 222, 333, 444
STORES = [
    StoreSpec(merchant_id=A, access_token="A-access-1", refresh_token="A-refresh-1"),
    StoreSpec(merchant_id=B, access_token="B-access-1", refresh_token="B-refresh-1"),
    StoreSpec(merchant_id=NO_SCOPE, access_token="C-access-1", refresh_token="C-refresh-1",
              scope="settings.read offline_access"),
    StoreSpec(merchant_id=NO_LOYALTY, access_token="D-access-1", refresh_token="D-refresh-1", loyalty_app=False),
]


@pytest.fixture
def sandbox():
    app = create_sandbox(token=None, stores=STORES, oauth_latency_ms=300)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def service_env(service_env, sandbox):
    """Published-app mode: tokens come from app.store.authorize, refresh through the sandbox."""
    env = dict(service_env, SALLA_ACCESS_TOKEN="", SALLA_ACCOUNTS_URL=sandbox.url, SALLA_CLIENT_ID="sandbox-client",
               SALLA_CLIENT_SECRET="sandbox-client-secret", SALLA_HTTP_TIMEOUT_SECONDS="2", ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789")
    return env


def signed_post(web, payload: dict) -> requests.Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return requests.post(web.url + "/webhooks/salla", data=body, timeout=10,
                         headers={"Content-Type": "application/json", "X-Salla-Signature": sign(body, WEBHOOK_SECRET)})


def sandbox_store(sandbox, merchant: int) -> dict:
    return requests.get(f"{sandbox.url}/_sandbox/stores/{merchant}", timeout=5).json()


def authorize(web, sandbox, merchant: int, scope: str = "customers.read offline_access") -> dict:
    view = sandbox_store(sandbox, merchant)
    answer = signed_post(web, {"event": "app.store.authorize", "merchant": merchant, "created_at": "2026-11-25 10:00:00",
                               "data": {"access_token": view["access_token"], "refresh_token": view["refresh_token"],
                                        "expires": view["access_expires_at"], "scope": scope, "token_type": "bearer"}})
    assert answer.json() == {"status": "stored"}
    return view


def order(web, merchant: int, customer: int, order_id: int = 1) -> requests.Response:
    body = sample("order.created.json")
    body["merchant"], body["data"]["id"], body["data"]["customer"]["id"] = merchant, order_id, customer
    return signed_post(web, body)


def stats(sandbox) -> dict:
    return requests.get(sandbox.url + "/_sandbox/stats", timeout=5).json()


def store_stats(sandbox, merchant: int) -> dict:
    return stats(sandbox)["stores"][str(merchant)]


def admin_store(web, merchant: int) -> dict:
    return requests.get(f"{web.url}/admin/stores/{merchant}", headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}, timeout=5).json()


def test_tokens_are_stored_encrypted_and_each_store_reads_with_its_own(web, worker, sandbox, reminders, store):
    view_a = authorize(web, sandbox, A)
    view_b = authorize(web, sandbox, B)
    for key in store.scan_iter("*"):
        if store.type(key) == "string":
            value = store.get(key)
            assert view_a["access_token"] not in value and view_a["refresh_token"] not in value
    order(web, A, 1001)
    order(web, B, 1001)
    wait_until(lambda: len(reminders.received) == 2, message="a reminder per store")
    assert {r["body"]["merchant_id"] for r in reminders.received} == {A, B}
    assert store_stats(sandbox, A)["by_status"] == {"200": 1}
    assert store_stats(sandbox, B)["by_status"] == {"200": 1}
    assert view_b["access_token"] not in worker.log_text() and view_a["access_token"] not in worker.log_text()


def test_eight_workers_hitting_401_at_once_make_exactly_one_refresh_call(web, service_env, sandbox, tmp_path, store):
    authorize(web, sandbox, A)
    requests.post(f"{sandbox.url}/_sandbox/stores/{A}/expire-access-token", timeout=5)
    with celery_worker(service_env, tmp_path / "worker8.log", concurrency=8, name="eight"):
        customers = range(2001, 2009)
        for customer in customers:
            order(web, A, customer)
        # Every customer read with the fresh token (a read that started after the refresh never
        # saw the 401: how many did depends on timing, not on the rule under test).
        wait_until(lambda: store_stats(sandbox, A)["by_status"].get("200", 0) >= len(customers)
                   and all(stats(sandbox)["by_customer"].get(str(c), 0) >= 1 for c in customers), timeout=60,
                   message="every customer read after the refresh")
        counts = store_stats(sandbox, A)
    assert counts["refresh_calls"] == 1 and counts["refresh_reuses"] == 0
    assert counts["by_status"]["401"] >= 2  # several workers really did hit the 401 at once
    assert admin_store(web, A)["state"] == "active"


def test_rotation_then_a_reused_refresh_token_marks_the_store_and_stops(web, worker, sandbox, store):
    first = authorize(web, sandbox, A)
    requests.post(f"{sandbox.url}/_sandbox/stores/{A}/expire-access-token", timeout=5)
    order(web, A, 1001)
    wait_until(lambda: store_stats(sandbox, A)["by_status"].get("200", 0) == 1, message="read after the refresh")
    rotated = sandbox_store(sandbox, A)
    assert rotated["refresh_token"] != first["refresh_token"] and store_stats(sandbox, A)["refresh_calls"] == 1
    # A stale authorize delivery replayed with older tokens must not win over the rotated ones...
    stale = signed_post(web, {"event": "app.store.authorize", "merchant": A, "data": {
        "access_token": first["access_token"], "refresh_token": first["refresh_token"],
        "expires": first["access_expires_at"] - 10, "scope": "customers.read offline_access"}})
    assert stale.json()["status"] == "ignored"
    # ...but if our store ever held a spent refresh token, Salla revokes the store: we stop.
    from service.state.tokens import StoreTokens, TokenStore
    TokenStore(store, "lpr:", [TOKEN_KEY]).save(A, StoreTokens(first["access_token"], first["refresh_token"], 0, "customers.read"))
    order(web, A, 1001, order_id=2)
    wait_until(lambda: admin_store(web, A)["state"] == "needs_reauth", message="store marked for re-authorization")
    assert "invalid_grant" in admin_store(web, A)["reason"]
    assert store_stats(sandbox, A)["refresh_reuses"] == 1
    order(web, A, 1001, order_id=3)
    time.sleep(1.5)
    assert store_stats(sandbox, A)["refresh_calls"] == 2  # no retry loop
    assert admin_store(web, A)["counters"]["dropped_events"] == 1


def test_a_missing_scope_is_permanent_and_visible(web, worker, sandbox):
    authorize(web, sandbox, NO_SCOPE)  # the event claims customers.read; Salla disagrees
    order(web, NO_SCOPE, 1001)
    wait_until(lambda: admin_store(web, NO_SCOPE).get("state") == "needs_reauth", message="scope error recorded")
    assert "customers.read" in admin_store(web, NO_SCOPE)["reason"]
    order(web, NO_SCOPE, 1001, order_id=2)
    time.sleep(1.5)
    assert store_stats(sandbox, NO_SCOPE)["requests"] == 1


def test_a_store_without_the_loyalty_app_is_not_polled(web, worker, sandbox):
    authorize(web, sandbox, NO_LOYALTY)
    order(web, NO_LOYALTY, 1001)
    wait_until(lambda: admin_store(web, NO_LOYALTY)["loyalty_app_missing"], message="missing app remembered")
    for order_id in range(2, 6):
        order(web, NO_LOYALTY, 1001 + order_id, order_id=order_id)
    time.sleep(1.5)
    assert store_stats(sandbox, NO_LOYALTY)["requests"] == 1
    assert admin_store(web, NO_LOYALTY)["counters"]["skipped_no_loyalty_app"] == 4


def test_uninstall_erases_the_stores_data_and_keeps_only_its_counters(web, worker, sandbox, reminders, store):
    keys = Keys("lpr:").store(A)
    authorize(web, sandbox, A)
    order(web, A, 1001)  # a reminder goes out: profile, lots, marks, ledger, wake-ups
    wait_until(lambda: len(reminders.received) == 1, message="the reminder")
    # Salla blocks the store for a minute: reads pile up in its queue.
    store.set(keys.blocked_until, f"{time.time() + 60}")
    for customer in range(3001, 3006):
        order(web, A, customer)
    wait_until(lambda: store.zcard(keys.pending) == 5, message="five reads waiting")
    from service.state.due_set import DueEntry, DueSet
    due = DueSet(store, "lpr:")
    due.schedule([(time.time() + 3600, DueEntry(A, c, 7, "0" * 12)) for c in (3001, 3002)])  # held reminders
    before = set(store.scan_iter(match=keys.pattern))
    assert {keys.profile(1001), keys.marks(1001), keys.tokens} <= before  # the lots in the profile
    body = sample("app.uninstalled.json")
    body["merchant"], body["created_at"] = A, "2026-11-26 10:00:00"  # after authorize()'s
    assert signed_post(web, body).json() == {"status": "uninstalled"}
    wait_until(lambda: admin_store(web, A)["counters"].get("dropped_syncs") == 5, message="queued reads dropped")
    assert admin_store(web, A)["counters"]["dropped_reminders"] >= 2
    assert not any(entry.merchant_id == A for entry in due.claim(time.time() + 10**8, 10_000))
    assert admin_store(web, A)["state"] == "uninstalled"
    # Every key of the store is gone but what an operator needs; nothing personal is left.
    left = {key.rsplit(":", 1)[-1] for key in store.scan_iter(match=keys.pattern)}
    assert left <= set(KEPT_AFTER_UNINSTALL) and {"state", "counters", "stats"} <= left
    assert all("Mohammed" not in str(store.hgetall(key)) for key in store.scan_iter(match=keys.pattern)
               if store.type(key) == "hash")
    order(web, A, 3001, order_id=9)
    time.sleep(1.5)
    assert store_stats(sandbox, A)["requests"] == 1  # the one read before the uninstall, no more


def test_429_with_retry_after_is_obeyed_and_the_read_succeeds(web, worker, sandbox, reminders):
    authorize(web, sandbox, A)
    requests.put(sandbox.url + "/_sandbox/faults", json={"stores": {str(A): {"fail_next": [429]}}}, timeout=5)
    order(web, A, 1001)
    wait_until(lambda: len(reminders.received) == 1, timeout=30, message="the reminder after the 429")
    assert store_stats(sandbox, A)["by_status"] == {"429": 1, "200": 1}
    summary = admin_store(web, A)
    assert summary["counters"]["salla_429"] == 1
    assert summary["blocked_until"] is not None  # Retry-After was recorded and obeyed by dispatch


def test_5xx_and_timeouts_are_retried_to_success(web, worker, sandbox, reminders):
    authorize(web, sandbox, A)
    requests.put(sandbox.url + "/_sandbox/faults", json={"stores": {str(A): {
        "fail_next": [503, "timeout", 500], "timeout_seconds": 3}}}, timeout=5)
    order(web, A, 1001)
    wait_until(lambda: len(reminders.received) == 1, timeout=60, message="the reminder after 3 failures")
    assert store_stats(sandbox, A)["by_status"] == {"503": 1, "504": 1, "500": 1, "200": 1}
    assert worker.log_text().count("transient failure merchant=111 customer=1001") == 3


def test_coalescing_fifty_events_one_read_and_one_more_for_an_event_during_it(web, worker, sandbox, reminders, store):
    """Deterministic, whatever the machine's speed: the burst arrives while Salla has the store
    blocked, so no read can start before every event of it is in; then the block lifts."""
    authorize(web, sandbox, A)
    keys = Keys("lpr:").store(A)
    store.set(keys.blocked_until, f"{time.time() + 3600}")
    requests.put(sandbox.url + "/_sandbox/faults", json={"stores": {str(A): {"latency_ms": 1500}}}, timeout=5)
    for order_id in range(50):
        assert order(web, A, 1001, order_id=order_id).json() == {"status": "queued"}
    counted = lambda: admin_store(web, A)["counters"]  # noqa: E731
    wait_until(lambda: counted().get("events") == 50, message="the burst in")
    assert counted()["events_coalesced"] == 49 and stats(sandbox)["by_customer"].get("1001", 0) == 0
    store.delete(keys.blocked_until)
    order(web, A, 1001, order_id=50)  # the burst's last event: its pump finds the store open
    wait_until(lambda: stats(sandbox)["by_customer"].get("1001", 0) == 1, message="the read under way")
    order(web, A, 1001, order_id=999)  # arrives while the read is under way
    wait_until(lambda: stats(sandbox)["by_customer"].get("1001", 0) == 2, timeout=20, message="exactly one more read")
    time.sleep(4)
    assert stats(sandbox)["by_customer"]["1001"] == 2
    assert counted()["events"] == 52 and counted()["events_coalesced"] == 50 and counted()["reads"] == 2
    assert len(reminders.received) == 1  # and the reminder still went out once
