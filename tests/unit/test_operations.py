"""Backfill priority and errors, resync, retention, personal data export/erasure, and webhook
subscriptions: fakeredis for our state, the sandbox over real HTTP for Salla."""
import json
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import requests
import responses

from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from service.web.app import create_app
from service.cli import main as cli
from service.domain.events import Customer
from service.domain.loyalty import Lot
from service.domain.signatures import sign, verify_delivery
from service.state.stores import UNINSTALLED
from tests.conftest import TOKEN_KEY, WEBHOOK_SECRET, make_settings, sample, sample_bytes
from service.ops import backfill as backfill_runs  # start, state, progress
from workers import backfill, lifecycle, reminding, sync
from service.ops import personal_data
from service.state.budget import Limits
from service.ops.runtime import build_runtime
from service.clients.webhook_subscriptions import NEEDED_EVENTS, SubscriptionError, subscribe

M = 1305146709
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}


def runtime(server=None, **env):
    store = fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), decode_responses=True)
    return build_runtime(make_settings(**env), store, requests.Session(), clock=lambda: NOW.timestamp())


def test_event_driven_customers_are_dispatched_before_the_backfills():
    rt = runtime()
    k = rt.keys.store(M)
    rt.store.zadd(k.backfill_pending, {str(c): i for i, c in enumerate(range(100, 110))})
    rt.budget.enqueue(M, 7, NOW.timestamp() - 1)
    rt.budget.enqueue(M, 8, NOW.timestamp() - 1)
    dispatch = rt.budget.dispatch(M, Limits(5, 60, 500, 600), NOW.timestamp())
    # (two backfill reads in flight at most: Budget.BACKFILL_IN_FLIGHT, issue 18 goal 4)
    assert [r.customer_id for r in dispatch.reads] == [7, 8, 100, 101]
    assert rt.store.smembers(k.backfill_reading) == {"100", "101"}
    assert dispatch.wait and dispatch.wait > 0  # the rest waits for budget
    # A backfill customer an event-driven read already has is left to it: read once.
    rt2 = runtime()
    rt2.store.zadd(rt2.keys.store(M).backfill_pending, {"7": 0, "9": 1})
    rt2.budget.enqueue(M, 7, NOW.timestamp() + 60)  # queued by an event, not due yet
    dispatch = rt2.budget.dispatch(M, Limits(5, 60, 500, 600), NOW.timestamp())
    assert [r.customer_id for r in dispatch.reads] == [9] and dispatch.covered == 1


def test_a_backfill_starts_once_and_its_progress_estimates_the_time_left():
    rt = runtime(SALLA_PLAN_LIMIT="120", SALLA_CUSTOMER_LIMIT="500")
    first = backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "operator")
    assert first["started"] == "1" and M in rt.budget.backlog()
    assert backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "operator")["started"] == "0"
    rt.store.hset(rt.keys.store(M).backfill, mapping={"next_page": 3, "total_pages": 10, "total": 600, "listed": 120})
    rt.store.zadd(rt.keys.store(M).backfill_pending, {str(c): c for c in range(50)})
    view = backfill_runs.progress(rt.store, rt.keys, rt.settings, {}, M)
    # 50 waiting + 480 not listed + 8 pages, at min(120/60, 500/600) = 0.833 requests a second
    assert view["state"] == "running" and view["estimated_seconds_left"] == 646
    assert backfill_runs.progress(rt.store, rt.keys, rt.settings, {}, 99) == {"state": "never"}


@pytest.fixture
def sandbox():
    app = create_sandbox(customers={}, token="sandbox-token")
    with serve_in_thread(app) as server:
        requests.put(f"{server.url}/_sandbox/customers/seed", json={"count": 70, "start_id": 500}).raise_for_status()
        yield server


def test_listing_a_page_saves_profiles_and_queues_each_customer_once(sandbox):
    rt = runtime(SALLA_API_BASE_URL=sandbox.url)
    backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "test")
    assert backfill.want_page(rt, M) and not backfill.want_page(rt, M)  # one page at a time (a lock)
    assert backfill.list_page(rt, M) == "listed"
    k = rt.keys.store(M)
    assert rt.store.zcard(k.backfill_pending) == 60 and rt.profiles.load(M, 500).mobile == "+966500000500"
    rt.store.hset(k.backfill, "next_page", 1)  # listing page 1 again queues nobody twice
    assert backfill.list_page(rt, M) == "listed" and rt.store.zcard(k.backfill_pending) == 60
    assert backfill.list_page(rt, M) == "listed"
    assert rt.store.zcard(k.backfill_pending) == 70 and backfill_runs.state(rt.store, rt.keys, M)["listing_done"] == "1"
    # An event-driven customer due now: the next page would wait for it.
    rt.budget.enqueue(M, 1, NOW.timestamp() - 1)
    rt.store.hset(k.backfill, "listing_done", 0)
    assert backfill.list_page(rt, M) == "deferred"


@pytest.mark.parametrize("status,outcome,state", [(500, "retry", "running"), (503, "retry", "running"),
                                                  (429, "retry", "running"), (403, "failed", "failed"),
                                                  (404, "failed", "failed"), (422, "failed", "failed")])
def test_salla_errors_on_the_customer_list(sandbox, status, outcome, state):
    requests.put(f"{sandbox.url}/_sandbox/route-faults", json={"customers": [status]}).raise_for_status()
    rt = runtime(SALLA_API_BASE_URL=sandbox.url)
    backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "test")
    assert backfill.list_page(rt, M) == outcome
    current = backfill_runs.state(rt.store, rt.keys, M)
    assert current["state"] == state and str(status) in (current.get("error") or current.get("last_error"))
    if status >= 500:  # the same page again, and it goes on
        assert backfill.list_page(rt, M) == "listed" and current["next_page"] == "1"
    if status == 429:  # Salla said wait: the store is blocked for Retry-After
        assert backfill.list_page(rt, M) == "no_budget"


@responses.activate
def test_a_403_block_on_the_customer_list_holds_the_backfill_instead_of_failing_it():
    """Issue 15 item 21, for the backfill's GET /customers: Salla's "blocked" 403 is a hold."""
    responses.get("https://api.salla.dev/admin/v2/customers", status=403, json=sample("errors.json")["403_blocked"])
    rt = runtime()
    backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "test")
    assert backfill.list_page(rt, M) == "retry"
    assert backfill_runs.state(rt.store, rt.keys, M)["state"] == "running" and rt.budget.blocked(M, NOW.timestamp() + 299)
    assert not rt.budget.blocked(M, NOW.timestamp() + sync.FORBIDDEN_HOLD_SECONDS + 1)


def test_a_wrong_token_fails_the_backfill_and_the_admin_api_refuses_uninstalled_stores(sandbox):
    rt = runtime(SALLA_API_BASE_URL=sandbox.url, SALLA_ACCESS_TOKEN="wrong")
    backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "test")
    assert backfill.list_page(rt, M) == "failed"
    server = fakeredis.FakeServer()
    app = create_app(make_settings(ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789"), redis_client=fakeredis.FakeRedis(server=server, decode_responses=True),
                     queue=object())
    app.extensions["reminder_service"].registry.set_state(M, UNINSTALLED)
    response = app.test_client().post(f"/admin/stores/{M}/backfill", headers=ADMIN)
    assert response.status_code == 409 and "uninstalled" in response.get_json()["message"]


def lot(days, points=100):
    return Lot(key=f"k{days}", name="", points=points, used_points=0, status="مؤكدة",
               created_at=NOW - timedelta(days=300), expires_at=NOW + timedelta(days=days), order_id="1",
               reference_id=None)


def known_customer(rt, customer_id=5, read_days_ago=0):
    sync.accept_event(rt, {"merchant_id": M, "customer": {"id": customer_id, "name": "سارة", "mobile": "+966500000001",
                                                          "email": "s@x.sa"}})
    customer = Customer(customer_id, "سارة", "+966500000001", "s@x.sa", None)
    reminding.after_read(rt, M, customer, [lot(3), lot(20)], NOW, lambda *a: None)
    rt.store.zadd(rt.keys.store(M).read_at, {str(customer_id): NOW.timestamp() - read_days_ago * 86400})


def test_resync_queues_stale_customers_at_low_priority_and_forgets_old_read_times():
    rt = runtime(RESYNC_AFTER_DAYS="30", DATA_RETENTION_DAYS="100", QUIET_HOURS="off")
    known_customer(rt, 5, read_days_ago=40)  # stale, still kept
    known_customer(rt, 6, read_days_ago=2)  # fresh
    rt.store.zadd(rt.keys.store(M).read_at, {"7": NOW.timestamp() - 120 * 86400})  # past retention
    rt.store.zadd(rt.keys.store(M).read_at, {"8": NOW.timestamp() - 50 * 86400})  # profile gone
    counts = backfill.resync(rt, NOW.timestamp())
    k = rt.keys.store(M)
    assert counts == {"queued": 1, "forgotten": 2}
    assert rt.store.zrange(k.backfill_pending, 0, -1) == ["5"] and rt.store.zscore(k.read_at, "7") is None
    assert backfill.resync(rt, NOW.timestamp())["queued"] == 0  # once per period


def test_profiles_and_lots_expire_after_the_retention_period_renewed_by_each_event():
    rt = runtime(DATA_RETENTION_DAYS="10", QUIET_HOURS="off")
    known_customer(rt, 5)
    k = rt.keys.store(M)
    assert 9 * 86400 < rt.store.ttl(k.profile(5)) <= 10 * 86400
    # The lots are kept in the profile (service/state/last_read.py): they go with it.
    assert "L" in rt.store.hkeys(k.profile(5)) and not rt.store.exists(k.lots(5))
    rt.store.expire(k.profile(5), 3600)  # as if nine days and 23 hours passed
    # A resync read (the read's own path, after_read) does not extend it.
    reminding.after_read(rt, M, rt.profiles.load(M, 5), [lot(3)], NOW, lambda *args: None)
    assert rt.store.ttl(k.profile(5)) <= 3600 and len(reminding.load_lots(rt, M, 5)[1]) == 1
    known_customer(rt, 5)  # an event: seen again
    assert rt.store.ttl(k.profile(5)) > 9 * 86400


def test_export_and_forget_one_customer_listing_the_keys_before_and_after(monkeypatch, capsys):
    server = fakeredis.FakeServer()
    rt = runtime(server, QUIET_HOURS="off")
    known_customer(rt, 5)
    known_customer(rt, 6)
    k = rt.keys.store(M)
    rt.store.zadd(k.backfill_pending, {"5": 1})
    rt.store.sadd(k.backfill_seen, "5")
    before = sorted(rt.store.scan_iter(match=k.pattern))
    other_before = {key: rt.store.type(key) for key in before
                    if ":5" not in key and "reminder:" not in key and "backfill" not in key}  # held 5 only
    app = create_app(make_settings(ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789"), redis_client=fakeredis.FakeRedis(server=server, decode_responses=True),
                     queue=object())
    client = app.test_client()
    exported = client.get(f"/admin/stores/{M}/customers/5/export", headers=ADMIN)
    assert exported.status_code == 200
    data = exported.get_json()
    assert data["profile"]["mobile"] == "+966500000001" and len(data["lots"]["lots"]) == 2
    assert data["reminders"] and data["reminders"][0]["body"]["customer"]["name"] == "سارة"
    assert data["due_entries"] and data["queues"]["backfill_queued_at"] == 1
    assert {"sent", "stage:30"} & set(data["marks"]) or data["marks"]
    forgotten = client.delete(f"/admin/stores/{M}/customers/5", headers=ADMIN).get_json()
    # profile (with the lots: service/state/last_read.py), marks, a ledger record
    assert forgotten["forgotten"] and forgotten["keys_deleted"] >= 3 and forgotten["ledger_records"] >= 1
    after = sorted(rt.store.scan_iter(match=k.pattern))
    gone = set(before) - set(after)
    assert {k.profile(5), k.marks(5)} <= gone and k.lots(5) not in before
    for key in after:  # nothing of customer 5 is left anywhere in the store's keys
        dump = json.dumps({"t": rt.store.type(key)} | ({"v": rt.store.hgetall(key)} if rt.store.type(key) == "hash" else {}))
        assert "سارة" not in dump or key.endswith((":customer:6", ":lots:6")) or "reminder:" in key
        if rt.store.type(key) == "hash" and "reminder:" in key:
            assert rt.store.hget(key, "customer_id") == "6"
    assert rt.store.zscore(k.backfill_pending, "5") is None and not rt.store.sismember(k.backfill_seen, "5")
    assert rt.due.customer_entries(M, 5) == [] and rt.due.customer_entries(M, 6)
    assert [key for key in other_before if key not in after] == []  # customer 6 and the store untouched
    assert json.loads(rt.store.lindex(k.erasures, 0))["keys_deleted"] == forgotten["keys_deleted"]
    tombstone = json.loads(rt.store.lindex(k.erasures, 0))  # when and how many; no id
    assert set(tombstone) == {"at", "keys_deleted", "ledger_records", "due_entries"}
    # Unknown customer: 404 over HTTP, exit status 2 from the CLI.
    assert client.get(f"/admin/stores/{M}/customers/5/export", headers=ADMIN).status_code == 404
    assert client.delete(f"/admin/stores/{M}/customers/5", headers=ADMIN).status_code == 404
    monkeypatch.setattr("service.cli.connect", lambda settings: fakeredis.FakeRedis(server=server, decode_responses=True))
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    assert cli(["--json", "export-customer", str(M), "5"]) == 2 and "nothing is held" in capsys.readouterr().err
    assert cli(["--json", "export-customer", str(M), "6"]) == 0 and "سارة" in capsys.readouterr().out
    assert cli(["--json", "forget-customer", str(M), "6"]) == 0
    assert cli(["--json", "forget-customer", str(M), "6"]) == 2
    capsys.readouterr()
    assert cli(["--json", "backfill-status", str(M)]) == 0
    assert json.loads(capsys.readouterr().out)["backfill"] == {"state": "never"}


def test_uninstall_deletes_the_backfill_keys(sandbox):
    rt = runtime(SALLA_API_BASE_URL=sandbox.url)
    backfill_runs.start(rt.store, rt.keys, M, NOW.timestamp(), "test")
    backfill.list_page(rt, M)
    rt.store.sadd(rt.keys.store(M).backfill_reading, "500")
    rt.store.zadd(rt.keys.store(M).read_at, {"500": 1})
    rt.registry.set_state(M, UNINSTALLED)
    lifecycle.forget_store(rt, M)
    left = {key.rsplit("}:", 1)[-1] for key in rt.store.scan_iter(match=rt.keys.store(M).pattern)}
    assert not {name for name in left if name.startswith(("backfill", "read-at"))}, left


def subscription_settings(sandbox, **env):
    return make_settings(SALLA_API_BASE_URL=sandbox.url, PUBLIC_WEBHOOK_URL="https://hooks.example.com/webhooks/salla",
                         **env)


def test_subscribe_webhooks_registers_what_is_missing_once_over_http(sandbox):
    rt = build_runtime(subscription_settings(sandbox), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    first = subscribe(rt.client, "sandbox-token", rt.settings)
    assert first["subscribed_now"] == list(NEEDED_EVENTS) and first["missing"] == []
    again = subscribe(rt.client, "sandbox-token", rt.settings)
    assert again["subscribed_now"] == [] and again["already_subscribed"] == list(NEEDED_EVENTS)
    rows = requests.get(f"{sandbox.url}/_sandbox/merchant-api").json()["subscriptions"][str(M)]
    assert len(rows) == len(NEEDED_EVENTS) and {r["security_strategy"] for r in rows} == {"signature"}
    assert all(r["version"] == 2 and r["url"] == "https://hooks.example.com/webhooks/salla" for r in rows)
    assert "secret" not in json.dumps(again["subscriptions"])


def sandbox_rows(sandbox):
    return requests.get(f"{sandbox.url}/_sandbox/merchant-api").json()["subscriptions"][str(M)]


def test_subscriptions_are_registered_plainly_then_signed_with_our_secret_by_update(sandbox):
    """Issue 15 item 22: Register Webhook documents no security fields (Salla then signs with a
    secret of its own); PUT /webhooks/{id} sets ours. Proof: a delivery Salla would sign with
    what it holds for each subscription passes our own verification."""
    rt = build_runtime(subscription_settings(sandbox), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    result = subscribe(rt.client, "sandbox-token", rt.settings)
    assert result["security_set"] == sorted(NEEDED_EVENTS)
    body = sample_bytes("order.created.json")
    for row in sandbox_rows(sandbox):
        signed = {"X-Salla-Security-Strategy": "Signature", "X-Salla-Signature": sign(body, row["secret"])}
        assert verify_delivery(rt.settings.webhook_strategy, rt.settings.webhook_secret, body, signed), row["event"]
    assert WEBHOOK_SECRET not in json.dumps(result)


def test_an_old_subscription_signed_with_sallas_own_secret_gets_ours(sandbox):
    """Issue 15 item 22: one registered earlier (Salla's secret) is updated too, not left alone."""
    url = "https://hooks.example.com/webhooks/salla"
    requests.post(f"{sandbox.url}/webhooks/subscribe", headers={"Authorization": "Bearer sandbox-token"},
                  json={"event": "order.created", "url": url, "security_strategy": "signature",
                        "secret": WEBHOOK_SECRET}).raise_for_status()
    assert sandbox_rows(sandbox)[0]["secret"] != WEBHOOK_SECRET  # Register ignored it, as Salla does
    rt = build_runtime(subscription_settings(sandbox), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    result = subscribe(rt.client, "sandbox-token", rt.settings)
    assert "order.created" in result["already_subscribed"] and "order.created" in result["security_set"]
    assert {row["secret"] for row in sandbox_rows(sandbox)} == {WEBHOOK_SECRET}


def test_the_token_strategy_is_set_and_checked_in_the_list(sandbox, monkeypatch):
    """Issue 15 item 22: under Token the list shows the Authorization header Salla will send: it
    must be our secret, else a clear error (here: an update that Salla did not apply)."""
    settings = subscription_settings(sandbox, SALLA_WEBHOOK_STRATEGY="token")
    rt = build_runtime(settings, fakeredis.FakeRedis(decode_responses=True), requests.Session())
    subscribe(rt.client, "sandbox-token", rt.settings)
    assert {(r["security_strategy"], r["secret"]) for r in sandbox_rows(sandbox)} == {("token", WEBHOOK_SECRET)}
    other = build_runtime(subscription_settings(sandbox, SALLA_WEBHOOK_STRATEGY="token", SALLA_WEBHOOK_SECRET="rotated"),
                          fakeredis.FakeRedis(decode_responses=True), requests.Session())
    monkeypatch.setattr(other.client, "update_webhook", lambda token, webhook_id, body: {})
    with pytest.raises(SubscriptionError, match="Authorization header is not our SALLA_WEBHOOK_SECRET") as raised:
        subscribe(other.client, "sandbox-token", other.settings)
    assert "rotated" not in str(raised.value) and WEBHOOK_SECRET not in str(raised.value)


@pytest.mark.parametrize("route,status", [("webhooks", 500), ("webhooks", 403), ("subscribe", 503),
                                          ("subscribe", 422), ("subscribe", 401), ("update", 404), ("update", 422)])
def test_subscribe_webhooks_reports_salla_errors(sandbox, monkeypatch, capsys, route, status):
    requests.put(f"{sandbox.url}/_sandbox/route-faults", json={route: [status, status]}).raise_for_status()
    client = fakeredis.FakeRedis(decode_responses=True)
    client.sadd("lpr:stores", M)  # the store installed the app
    monkeypatch.setattr("service.cli.connect", lambda settings: client)
    for name, value in {"SALLA_WEBHOOK_SECRET": "x", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SALLA_API_BASE_URL": sandbox.url,
                        "SALLA_ACCESS_TOKEN": "sandbox-token",
                        "PUBLIC_WEBHOOK_URL": "https://hooks.example.com/webhooks/salla"}.items():
        monkeypatch.setenv(name, value)
    # It ran and Salla refused (1); a refused SALLA_ACCESS_TOKEN is ours to fix (2: configuration).
    assert cli(["--json", "subscribe-webhooks", str(M)]) == (2 if status == 401 else 1)
    err = capsys.readouterr().err
    assert (str(status) in err) if status != 401 else ("refused" in err)


def test_subscribe_webhooks_needs_a_public_url_and_salla_refuses_a_local_one(sandbox):
    rt = build_runtime(make_settings(SALLA_API_BASE_URL=sandbox.url), fakeredis.FakeRedis(), requests.Session())
    with pytest.raises(SubscriptionError, match="PUBLIC_WEBHOOK_URL"):
        subscribe(rt.client, "sandbox-token", rt.settings)
    local = build_runtime(make_settings(SALLA_API_BASE_URL=sandbox.url, PUBLIC_WEBHOOK_URL="http://localhost:8000/x"),
                          fakeredis.FakeRedis(), requests.Session())
    from service.clients.salla_client import SallaPermanentError
    with pytest.raises(SallaPermanentError, match="422"):
        subscribe(local.client, "sandbox-token", local.settings)


def test_a_403_block_from_the_sandbox_holds_the_store_over_http(sandbox):
    """Issue 15 item 21, over HTTP: the sandbox answers Salla's "blocked" 403 (a fault); the read
    waits out the hold with nothing dropped, then goes out."""
    requests.put(f"{sandbox.url}/_sandbox/faults", json={"stores": {str(M): {"fail_next": [403]}}}).raise_for_status()
    now = [NOW.timestamp()]
    rt = build_runtime(make_settings(SALLA_API_BASE_URL=sandbox.url, SYNC_DEBOUNCE_SECONDS="0"),
                       fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=lambda: now[0])
    reads = []
    customer = {"id": 500, "name": "x", "mobile": "+966500000500", "email": None, "notifications_enabled": None}
    assert sync.accept_event(rt, {"event": "order.created", "merchant_id": M, "customer": customer}) == "queued"

    def read_all():
        sync.pump(rt, M, lambda m, c, pages, lease: reads.append((c, pages, lease)), lambda m, wait: None)
        outcomes = [sync.sync_customer(rt, M, c, pages, lambda *a: None, lease=lease).outcome for c, pages, lease in reads]
        reads.clear()
        return outcomes

    assert read_all() == ["requeued"] and not rt.registry.loyalty_missing(M)
    assert read_all() == []  # held
    now[0] += sync.FORBIDDEN_HOLD_SECONDS + 1
    assert read_all() == ["read"]
