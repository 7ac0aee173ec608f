"""A store's keys: one pattern per store (service/state/keys.py), erased by construction at uninstall."""
from datetime import datetime, timedelta, timezone

import fakeredis
import requests

from service.domain.events import Customer
from service.state.keys import KEPT_AFTER_UNINSTALL, Keys
from service.domain.loyalty import Lot
from service.state.stores import UNINSTALLED
from service.state.tokens import StoreTokens
from tests.conftest import make_settings
from tests.unit.test_channels_and_delivery import Recorder
from workers import lifecycle, reminding, sync
from service.clients.channels import DeliveryPermanentError
from workers.delivery import deliver
from service.ops.runtime import build_runtime

M, OTHER = 1305146709, 42
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def lot(key, days, points=100):
    return Lot(key=key, name="", points=points, used_points=0, status="مؤكدة", created_at=NOW - timedelta(days=300),
               expires_at=NOW + timedelta(days=days), order_id=None, reference_id=None)


def busy_store(rt, merchant):
    """Everything a store accumulates: tokens, budget windows, queues, profiles, lots, marks,
    the ledger with a dead letter, due entries, counters and statistics."""
    rt.tokens.save(merchant, StoreTokens("a", "r", 2e9, "customers.read"))
    rt.registry.set_state(merchant, "active")
    rt.registry.set_config(merchant, plan_limit=360)
    for customer in (1, 2, 3):
        sync.accept_event(rt, {"merchant_id": merchant, "customer": {"id": customer, "name": "سارة",
                                                                     "mobile": "+966500000001", "email": "s@x.sa"}})
    sync.pump(rt, merchant, lambda *a: None, lambda *a: None)  # reads in flight, budget spent
    rt.budget.observe(merchant, {"Retry-After": "30"}, NOW.timestamp())
    rt.store.hincrby(rt.keys.store(merchant).attempts, 2, 1)
    rt.channels = [Recorder("webhook", failures=[DeliveryPermanentError("410")] * 5)]
    customer = Customer(1, "سارة", "+966500000001", "s@x.sa", None)
    published = []
    reminding.after_read(rt, merchant, customer, [lot("a", 3), lot("b", 20), lot("c", 90)], NOW,
                         lambda *a: published.append(a))
    for m, c, rid in published:
        deliver(rt, m, c, rid, NOW.timestamp())  # refused: dead letters
    rt.registry.mark_loyalty_missing(merchant, 600)
    rt.store.set(rt.keys.store(merchant).loyalty_ok, "1")


def test_every_key_of_a_store_carries_its_hash_tag():
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    busy_store(rt, M)
    shared = {rt.keys.stores, rt.keys.backlog, *rt.due.keys}
    deployment = rt.keys.deployment_secret("")  # secret:<purpose>: one per deployment (the suppression key)
    for key in rt.store.scan_iter("*"):
        assert key in shared or key.startswith((f"lpr:{{store:{M}}}:", deployment)), key


def test_uninstall_erases_the_store_and_keeps_only_what_an_operator_needs():
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    busy_store(rt, M)
    busy_store(rt, OTHER)
    before_other = sorted(rt.store.scan_iter(match=Keys("lpr:").store(OTHER).pattern))
    assert len(list(rt.store.scan_iter(match=rt.keys.store(M).pattern))) > 15
    assert rt.ledger.dead_letters(M) and rt.due.pending_count() > 0
    rt.registry.set_state(M, UNINSTALLED)
    counts = lifecycle.forget_store(rt, M)
    left = sorted(k.rsplit(":", 1)[-1] for k in rt.store.scan_iter(match=rt.keys.store(M).pattern))
    assert set(left) <= set(KEPT_AFTER_UNINSTALL) and {"state", "config", "counters"} <= set(left)
    assert counts["keys_erased"] > 10 and counts["dropped_syncs"] == 3 and counts["dropped_reminders"] >= 1
    assert all(entry.merchant_id != M for entry in rt.due.claim(1e12, 10_000))
    assert M not in rt.budget.backlog()
    # Nothing personal in what stays; the other store is untouched.
    for key in rt.store.scan_iter(match=rt.keys.store(M).pattern):
        assert "سارة" not in str(rt.store.hgetall(key)) and "+9665" not in str(rt.store.hgetall(key))
    assert sorted(rt.store.scan_iter(match=Keys("lpr:").store(OTHER).pattern)) == before_other
    assert rt.registry.counters(M)["keys_erased"] == counts["keys_erased"]


def test_an_erasure_queued_before_a_reinstall_leaves_the_new_install_alone():
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    busy_store(rt, M)
    rt.registry.set_state(M, UNINSTALLED)
    rt.store.set(rt.keys.store(M).app_event_at, "2000")  # uninstalled at 1000, installed again at 2000
    rt.registry.set_state(M, "active")
    assert lifecycle.forget_store(rt, M, uninstalled_at=1000.0) == {"skipped": 1}
    assert rt.tokens.load(M) is not None


class BrokerDown:
    def enqueue(self, message, task=None):
        from service.clients.queue import QueueUnavailable
        raise QueueUnavailable("broker down")


def test_an_uninstall_whose_erasure_was_never_published_is_erased_by_beat():
    """Issue 15 item 10: the broker is down through Salla's retries of app.uninstalled (each
    answered 503, forget_store never published); beat's erase_uninstalled finds the store,
    uninstalled with its data left, and erases it. Run again, it finds nothing and scans nothing."""
    import hashlib
    import hmac
    import json as _json

    from service.web.app import create_app
    from tests.conftest import WEBHOOK_SECRET, sample
    server = fakeredis.FakeServer()
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(server=server, decode_responses=True), requests.Session())
    busy_store(rt, M)
    busy_store(rt, OTHER)
    app = create_app(make_settings(), redis_client=fakeredis.FakeRedis(server=server, decode_responses=True),
                     queue=BrokerDown())
    event = sample("app.uninstalled.json") | {"merchant": M}
    raw = _json.dumps(event).encode()
    for _ in range(4):  # the first delivery and Salla's 3 retries
        answer = app.test_client().post("/webhooks/salla", data=raw, headers={
            "X-Salla-Signature": hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"})
        assert answer.status_code == 503
    assert rt.registry.is_uninstalled(M)
    assert rt.store.exists(rt.keys.store(M).profile(1))  # nothing erased: the task never ran
    before_other = sorted(rt.store.scan_iter(match=rt.keys.store(OTHER).pattern))

    later = float(rt.registry.state(M)["since"]) + lifecycle.ERASE_AFTER_SECONDS + 1
    assert lifecycle.erase_uninstalled(rt, float(rt.registry.state(M)["since"]) + 1) == []  # the task's turn first
    assert lifecycle.erase_uninstalled(rt, later) == [M]
    left = {k.rsplit(":", 1)[-1] for k in rt.store.scan_iter(match=rt.keys.store(M).pattern)}
    assert left <= set(KEPT_AFTER_UNINSTALL)
    assert all(entry.merchant_id != M for entry in rt.due.claim(1e12, 10_000))
    assert sorted(rt.store.scan_iter(match=rt.keys.store(OTHER).pattern)) == before_other  # active: untouched
    # Idempotent and cheap: nothing left to do, no store is scanned again.
    scans = []
    real_scan = rt.store.scan_iter
    rt.store.scan_iter = lambda *a, **kw: scans.append(kw) or real_scan(*a, **kw)
    assert lifecycle.erase_uninstalled(rt, later + 600) == [] and scans == []


def test_erase_uninstalled_runs_in_beat():
    """Issue 15 item 10: beat schedules the safety net."""
    from service.config.celery_config import ERASE_UNINSTALLED_TASK, TASK_ROUTES, celery_config
    schedule = celery_config(make_settings())["beat_schedule"]
    assert any(entry["task"] == ERASE_UNINSTALLED_TASK for entry in schedule.values())
    assert ERASE_UNINSTALLED_TASK in TASK_ROUTES
    from workers import tasks
    assert tasks.erase_uninstalled.name == ERASE_UNINSTALLED_TASK


def test_a_store_installed_again_is_not_erased_by_beat():
    """Issue 15 item 10: only stores still uninstalled are erased."""
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    busy_store(rt, M)
    rt.registry.set_state(M, UNINSTALLED, now=1000.0)
    rt.registry.set_state(M, "active", now=2000.0)
    assert lifecycle.erase_uninstalled(rt, 1e10) == [] and rt.tokens.load(M) is not None
