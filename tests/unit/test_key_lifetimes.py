"""Issue 15 item 19: every Redis key has a lifetime or an owner that deletes it, as
service/state/keys.py says (LIFETIMES). The service's flows run here on fakeredis (a webhook through
the web app, its read, the reminders, their delivery, a dead letter, a backfill, an alarm, the
admin API); every key they leave must be documented, and those documented as expiring must carry
a TTL. tests/integration/test_end_to_end.py checks the same after a real run on real Redis."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import requests
import responses

from service.web.app import create_app
from service.state.keys import lifetime
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, make_settings, sample
from service.ops import backfill as backfill_runs  # start, state, progress
from workers import backfill, delivery, sync
from service.ops.runtime import build_runtime

M, C = 1305146709, 225167971
LOYALTY = "https://api.salla.dev/admin/v2/customers/loyalty/points"
CUSTOMERS = "https://api.salla.dev/admin/v2/customers"
HOOK = "https://receiver.example.com/reminders"
ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}


def undocumented_or_immortal(store, prefix: str) -> list[str]:
    """Keys with no documented lifetime, or documented as expiring but without a TTL."""
    problems = []
    for key in sorted(store.scan_iter(match=prefix + "*")):  # the broker's keys are Celery's own
        key = key.decode() if isinstance(key, bytes) else key
        found = lifetime(prefix, key)
        if found is None:
            problems.append(f"{key}: not in service/state/keys.py LIFETIMES")
        elif found.expires and store.ttl(key) < 0:
            problems.append(f"{key}: documented to expire ({found.ends}) but has no TTL")
    return problems


def lot_row(days: int, points: int = 100):
    expiry = (datetime.now(timezone.utc) + timedelta(days=days)).astimezone(timezone(timedelta(hours=3)))
    return {"name": "مخصصة", "points": points, "used_points": 0, "status": "مؤكدة",
            "created_at": {"date": "2026-01-01 10:00:00.000000", "timezone_type": 3, "timezone": "Asia/Riyadh"},
            "expiry_date": expiry.strftime("%Y-%m-%d %H:%M:%S"), "order_id": 1, "used_at": {}, "reference_id": None}


def page(rows):
    return {"status": 200, "success": True, "data": rows, "pagination": {
        "count": len(rows), "total": len(rows), "perPage": 60, "currentPage": 1, "totalPages": 1, "links": {}}}


class Queue:
    def __init__(self):
        self.messages = []

    def enqueue(self, message, task=None):
        self.messages.append(message)

    def publish(self, task, args):
        self.messages.append(args)


@responses.activate
def test_every_key_a_full_run_leaves_has_a_ttl_or_a_documented_owner():
    """Issue 15 item 19: a key nobody documented, or one that should expire and does not, fails."""
    env = {"SYNC_DEBOUNCE_SECONDS": "0", "QUIET_HOURS": "off", "REMINDER_CHANNELS": "webhook", "REMINDER_WEBHOOK_URL": HOOK,
           "REMINDER_WEBHOOK_SECRET": "receiver-secret-0123456789", "ADMIN_TOKEN": ADMIN["Authorization"][7:]}
    settings = make_settings(**env)
    server = fakeredis.FakeServer()
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    rt = build_runtime(settings, store, requests.Session())
    web = create_app(settings, redis_client=fakeredis.FakeRedis(server=server), queue=Queue()).test_client()
    responses.get(LOYALTY, json=page([lot_row(3), lot_row(25, 80)]))
    responses.get(CUSTOMERS, json=page([{"id": C + 1, "first_name": "عميل", "last_name": "2", "mobile": 501111111,
                                         "mobile_code": "+966", "email": "c2@example.com"}]))
    responses.post(HOOK, status=200)

    # A webhook through the web app, drained as the worker does.
    body = json.dumps(sample("order.created.json"), ensure_ascii=False).encode()
    assert web.post("/webhooks/salla", data=body, headers={"X-Salla-Signature": sign(body, WEBHOOK_SECRET),
                                                            "Content-Type": "application/json"}).status_code == 200
    batch = rt.intake.claim(M, time.time())
    for _, event in batch:
        sync.accept_event(rt, event)
    rt.intake.done(M, [raw for raw, _ in batch])
    # The event's read, then a backfill (its page of customers and their reads): the reminders they queue.
    published = []

    def read_all():
        reads = []
        sync.pump(rt, M, lambda m, c, pages, lease: reads.append((m, c, pages, lease)), lambda m, wait: None)
        for m, c, pages, lease in reads:
            sync.sync_customer(rt, m, c, pages, lambda m_, c_, rid: published.append((m_, c_, rid)), lease=lease)
            sync.forget_correlation(rt, m, c)  # as workers/tasks.py does once a read is over

    read_all()
    backfill_runs.start(rt.store, rt.keys, M, time.time(), "test")
    assert backfill.list_page(rt, M) == "listed"
    read_all()
    assert published, "the reads queued reminders"
    for m, c, rid in published:
        delivery.deliver(rt, m, c, rid, time.time())
    assert backfill_runs.state(rt.store, rt.keys, M)["state"] == "done"
    # A dead letter, an alarm, and the admin API (audit, auth failures).
    dead_id = "d" * 32
    rt.ledger.create({**rt.ledger.get(*published[0][::2]).reminder, "reminder_id": dead_id}, 3600, time.time())
    assert rt.ledger.finish(M, C, dead_id, "dead", time.time(), "refused everywhere", "reminders_dead")
    rt.alarms.raise_("whatsapp_template", "the template is not approved")
    assert web.get("/admin/stores", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get(f"/admin/stores/{M}/dead-letters", headers=ADMIN).status_code == 200

    assert undocumented_or_immortal(store, settings.redis_key_prefix) == []
    found = {key.rsplit("}:", 1)[-1].split(":")[0] for key in store.scan_iter(match=rt.keys.store(M).pattern)}
    assert {"customer", "reminder", "marks", "dead", "backfill", "read-at"} <= found, found
    assert not store.exists(rt.keys.store(M).backfill_seen)  # the run ended: its list of customers went


# -- the keys the issue names ------------------------------------------------------------------
def bare_runtime(**env):
    return build_runtime(make_settings(**env), fakeredis.FakeRedis(decode_responses=True), requests.Session())


def dead_letter(rt, rid="e" * 32, keep=3600):
    reminder = {"reminder_id": rid, "merchant_id": M, "customer_id": C, "stage_days": 7, "points_expiring": 10,
                "lots": [{"key": "lot-a"}]}
    rt.ledger.create(reminder, keep, time.time())
    assert rt.ledger.finish(M, C, rid, "dead", time.time(), "refused everywhere", "reminders_dead")
    return rid


def test_an_expired_dead_letter_no_longer_counts_and_the_dead_set_expires(monkeypatch):
    """Issue 15 item 19: the ledger's `dead` set listed dead letters whose record had expired
    (counted in /admin and the metrics; replay answered 404) and never expired itself."""
    rt = bare_runtime()
    k = rt.keys.store(M)
    rid = dead_letter(rt, keep=3600)
    assert 3500 < rt.store.ttl(k.dead) <= 3600  # as long as its longest-lived record
    assert rt.registry.summary(M)["dead_letters"] == 1 and len(rt.ledger.dead_letters(M)) == 1
    later = time.time() + 3601
    monkeypatch.setattr(time, "time", lambda: later)  # an hour on: the record expired (fakeredis's clock too)
    assert not rt.store.exists(k.reminder(rid))
    assert rt.registry.summary(M)["dead_letters"] == 0
    assert rt.ledger.dead_letters(M) == [] and rt.store.zcard(k.dead) == 0


def test_a_late_failure_that_kills_a_sent_reminder_lists_it_for_as_long_as_its_record():
    """Issue 15 item 19: the other way into `dead` (service/ops/fallback.py) scores it the same way."""
    rt = bare_runtime()
    k = rt.keys.store(M)
    rid = "f" * 32
    rt.ledger.create({"reminder_id": rid, "merchant_id": M, "customer_id": C, "stage_days": 7,
                      "points_expiring": 10, "lots": [{"key": "lot-a"}]}, 600, time.time())
    rt.ledger.channel_result(M, rid, "sms", "sent")
    rt.ledger.mark_sent(M, C, rid, time.time())
    rt.ledger.settle_sent(M, C, rid, time.time())
    assert rt.ledger.late_failure(M, rid, "sms", "failed:undeliverable: x", "dead", time.time(), "{}", "x") == "dead"
    assert rt.store.zscore(k.dead, rid) == pytest.approx(time.time() + rt.store.pttl(k.reminder(rid)) / 1000, abs=2)
    assert 0 < rt.store.ttl(k.dead) <= 600


def test_the_correlation_hash_expires_and_goes_with_a_dropped_queue():
    """Issue 15 item 19: `correlation` (customer -> webhook id) had no lifetime: a read that never
    finished (its store's queue dropped) left its field for ever."""
    rt = bare_runtime()
    k = rt.keys.store(M)
    sync.remember_correlation(rt, M, C, "cid-1")
    assert 0 < rt.store.ttl(k.correlation) <= sync.CORRELATION_KEEP_SECONDS
    rt.budget.enqueue(M, C, time.time())
    rt.budget.drop_store(M)
    assert not rt.store.exists(k.correlation)


def test_the_retention_sweep_removes_what_the_store_hashes_keep_per_customer():
    """Issue 15 item 19: `pages` (and `attempts`, `correlation`) kept a field per customer ever
    read, until uninstall; the hourly sweep that forgets a customer's read time now takes them."""
    rt = bare_runtime()
    k = rt.keys.store(M)
    now = time.time()
    rt.store.sadd(rt.keys.stores, M)
    old, recent = C, C + 1
    for customer in (old, recent):
        rt.store.hset(k.pages, customer, 3)
        rt.store.hset(k.attempts, customer, 1)
        rt.store.hset(k.correlation, customer, "cid")
    rt.store.zadd(k.read_at, {str(old): now - (rt.settings.data_retention_days + 1) * 86400, str(recent): now})
    assert backfill.resync(rt, now)["forgotten"] == 1
    for key in (k.pages, k.attempts, k.correlation):
        assert rt.store.hkeys(key) == [str(recent)], key


@responses.activate
def test_backfill_seen_goes_when_the_run_ends():
    """Issue 15 item 19: `backfill:seen` (every customer id the run listed) stayed until the next run."""
    rt = bare_runtime(SYNC_DEBOUNCE_SECONDS="0", QUIET_HOURS="off")
    k = rt.keys.store(M)
    responses.get(CUSTOMERS, json=page([{"id": C, "first_name": "x", "last_name": "y", "mobile": 501111111,
                                         "mobile_code": "+966", "email": "c@example.com"}]))
    responses.get(LOYALTY, json=page([]))
    backfill_runs.start(rt.store, rt.keys, M, time.time(), "test")
    assert backfill.list_page(rt, M) == "listed" and rt.store.exists(k.backfill_seen)
    reads = []
    sync.pump(rt, M, lambda m, c, pages, lease: reads.append((c, pages, lease)), lambda m, wait: None)
    for c, pages, lease in reads:
        sync.sync_customer(rt, M, c, pages, lambda *a: None, lease=lease)
    assert backfill_runs.state(rt.store, rt.keys, M)["state"] == "done" and not rt.store.exists(k.backfill_seen)
    # A run that fails lets it go too.
    backfill_runs.start(rt.store, rt.keys, M, time.time(), "test")
    rt.store.sadd(k.backfill_seen, C)
    responses.replace(responses.GET, CUSTOMERS, status=422, json=sample("errors.json")["422_missing_customer_id"])
    assert backfill.list_page(rt, M) == "failed" and not rt.store.exists(k.backfill_seen)


def test_an_alarm_goes_by_itself_a_while_after_its_last_raise(monkeypatch):
    """Issue 15 item 19: `alarm:*` lived until an operator cleared it, also when its cause had
    gone (a store uninstalled, a provider fixed)."""
    from service.state.alarms import ALARM_KEEP_SECONDS
    rt = bare_runtime()
    rt.alarms.raise_("sms_account_1", "the account refused us")
    key = rt.keys.alarm("sms_account_1")
    assert 0 < rt.store.ttl(key) <= ALARM_KEEP_SECONDS
    rt.store.expire(key, 10)
    rt.alarms.raise_("sms_account_1", "again")  # still failing: it stays
    assert rt.store.ttl(key) > ALARM_KEEP_SECONDS - 5 and rt.alarms.active()["sms_account_1"]["count"] == "2"
