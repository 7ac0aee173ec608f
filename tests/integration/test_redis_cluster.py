"""The service's state on a real Redis Cluster (three masters, devkit/redis_cluster.py).

Everything goes through redis-py's cluster client, as `connect()` makes it for REDIS_CLUSTER=1,
with stores picked so that their keys live on three different nodes (asserted): the due set,
the per-store budget with its read leases, the ledger and its claims (queue_reminder, deliver),
intake (webhook accepted, inbox drained), the registry, tokens, alarms and uninstall's SCAN.
The last test runs a real Celery worker whose broker is the plain Redis (a database number)
while the state is on the cluster: webhook, read from the sandbox, reminder received.

A cluster has only database 0, so each test has its own REDIS_KEY_PREFIX, and its keys are
deleted after it (a SCAN of every primary). The cluster is this module's own, started once.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from devkit.processes import celery_worker
from devkit.redis_cluster import ClusterUnavailable, RedisCluster, binaries
from devkit.sandbox_seed import lot_row
from service.web.app import create_app
from service.state.keys import Keys
from service.state.redis_client import connect, is_cluster
from service.config.settings import Settings
from service.domain.signatures import sign
from service.state.tokens import StoreTokens
from tests.conftest import WEBHOOK_SECRET, sample
from tests.integration.conftest import wait_until
from workers import delivery, lifecycle, reminding, sync
from service.state.budget import Budget, Limits
from service.state.due_set import DueEntry, DueSet
from service.ops.runtime import build_runtime

pytestmark = pytest.mark.integration
FIRST_MERCHANT = 1305146709  # the samples' merchant; the others are the next ids on other nodes


@pytest.fixture(scope="module")
def cluster():
    try:
        binaries()
    except ClusterUnavailable as exc:
        pytest.skip(f"no Redis Cluster can be started here: {exc}")
    with RedisCluster() as started:
        yield started


@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def client(cluster, prefix):
    client = cluster.client(decode_responses=True)
    yield client
    leftovers = list(client.scan_iter(match=prefix + "*", count=1000))  # every primary
    for key in leftovers:
        client.delete(key)
    client.close()


def node_of(client, key: str) -> str:
    return client.get_node_from_key(key).name


@pytest.fixture
def merchants(client, prefix) -> list[int]:
    """Three stores whose keys live on three different nodes."""
    keys, found = Keys(prefix), {}
    merchant = FIRST_MERCHANT
    while len(found) < 3:
        found.setdefault(node_of(client, keys.store(merchant).state), merchant)
        merchant += 1
    chosen = list(found.values())
    assert len({node_of(client, keys.store(m).state) for m in chosen}) == 3
    return chosen


@pytest.fixture
def cluster_env(service_env, cluster, prefix):
    """The service's environment with its state on the cluster and the broker on the plain
    Redis of the other integration tests (a database number of its own)."""
    return dict(service_env, REDIS_URL=cluster.url, REDIS_CLUSTER="1", REDIS_KEY_PREFIX=prefix,
                CELERY_BROKER_URL=service_env["REDIS_URL"])


@pytest.fixture
def rt(request, cluster_env, client):
    """The worker's runtime in-process; reads are not debounced here (no pump is scheduled).
    Parametrize it indirectly with a number of due-set shards (default 1)."""
    shards = str(getattr(request, "param", 1))
    settings = Settings.from_env(dict(cluster_env, SYNC_DEBOUNCE_SECONDS="0", DUE_SET_SHARDS=shards))
    assert settings.due_set_shards == int(shards)
    runtime = build_runtime(settings, connect(settings), requests.Session())
    assert is_cluster(runtime.store)
    yield runtime
    runtime.store.close()


def put_lots(sandbox, customer_id: int, points: int, days: int) -> None:
    expires = datetime.now(timezone.utc) + timedelta(days=days)
    rows = [lot_row(points, 0, expires, expires - timedelta(days=300), order_id="1")]
    assert requests.put(f"{sandbox.url}/_sandbox/customers/{customer_id}/lots", json=rows, timeout=5).status_code == 200


def customer_event(merchant_id: int, customer_id: int) -> dict:
    return {"event": "customer.updated", "merchant_id": merchant_id, "customer": {
        "id": customer_id, "name": f"Customer {customer_id}", "mobile": "+966500000000", "email": None,
        "notifications_enabled": None}}


def pump_inline(rt, merchant_id: int) -> None:
    """workers/tasks.py's pump and reads, run here instead of by a worker."""
    reads = []
    sync.pump(rt, merchant_id, lambda *read: reads.append(read), lambda *a: None)
    for m, c, pages, lease in reads:
        sync.sync_customer(rt, m, c, pages, lambda mm, cc, rid: delivery.deliver(rt, mm, cc, rid, rt.clock()),
                           lease=lease)


# -- the due set ---------------------------------------------------------------------------------
def test_due_set_on_the_cluster(client, prefix, merchants):
    due = DueSet(client, prefix, lease_seconds=30, batch=2)  # small batches: several scripts per pipeline
    assert len({client.keyslot(key) for key in due.keys}) == 1  # one hash tag: one slot, one node
    now = 1_900_000_000.0
    entries = [(now + i, DueEntry(m, 100 + i, 7, f"{i:012x}")) for i, m in enumerate(merchants * 3)]
    assert due.schedule(entries) == 9
    assert due.pending_count() == 9

    claimed = due.claim(now + 4, limit=100)
    assert [e.customer_id for e in claimed] == [100, 101, 102, 103, 104]
    assert due.claim(now + 4, limit=100) == []  # leased: nobody gets them twice
    assert due.ack(claimed[:2]) == 2
    assert due.requeue_expired(now + 4 + 31) == 3  # the other three leases ran out

    assert due.cancel_store(merchants[0]) == 2  # its entries 103 (was leased) and 106
    assert due.cancel_customer(merchants[1], 107) == 1
    left = due.claim(now + 100, limit=100)
    assert sorted(e.customer_id for e in left) == [102, 104, 105, 108]
    due.remove(left)
    assert due.pending_count() == due.processing_count() == 0


# -- the due set in shards (DUE_SET_SHARDS) ------------------------------------------------------
def test_due_set_shards_live_on_different_nodes_and_a_sweep_claims_from_all(client, prefix):
    due = DueSet(client, prefix, lease_seconds=30, batch=2, shards=8)
    for shard in range(8):  # each shard's scripts stay in one slot
        assert len({client.keyslot(key) for key in due.shard_keys(shard)}) == 1
    nodes = {shard: node_of(client, due.shard_keys(shard)[0]) for shard in range(8)}
    assert len(set(nodes.values())) == 3, nodes  # spread over all three masters
    now = 1_900_000_000.0
    stores = range(FIRST_MERCHANT, FIRST_MERCHANT + 16)  # two stores per shard
    entries = [DueEntry(m, c, 7, f"{c:012x}") for m in stores for c in (1, 2, 3)]
    assert due.schedule([(now + i / 100, e) for i, e in enumerate(entries)]) == 48
    assert [c["pending"] for c in due.counts()] == [6] * 8
    assert due.next_due() == now

    first = due.claim(now + 10, limit=8)  # fewer than there are: one from each shard
    assert {due.shard_of(e.merchant_id) for e in first} == set(range(8))
    assert due.ack(first) == 8  # one pipeline over three nodes
    seen = list(first)
    while batch := due.claim(now + 10, limit=5):
        seen += batch
        due.ack(batch)
    assert sorted(seen, key=repr) == sorted(entries, key=repr)
    assert due.pending_count() == due.processing_count() == 0

    due.schedule([(now, e) for e in entries])
    assert due.cancel_store(stores[3]) == 3 and due.cancel_customer(stores[4], 2) == 1
    assert due.pending_count() == 44
    due.remove(entries)
    assert all(client.zcard(key) == 0 for key in due.keys)


def test_reshard_on_the_cluster_moves_entries_between_nodes(client, prefix):
    one = DueSet(client, prefix, lease_seconds=30, batch=3, shards=1)
    now = 1_900_000_000.0
    entries = [DueEntry(m, 1, 7, "0" * 12) for m in range(FIRST_MERCHANT, FIRST_MERCHANT + 12)]
    one.schedule([(now + i, e) for i, e in enumerate(entries)])
    leased = one.claim(now + 1, limit=2)
    eight = DueSet(client, prefix, lease_seconds=30, batch=3, shards=8)
    report = eight.reshard(1)
    assert report["moved"] == sum(1 for e in entries if e.merchant_id % 8 != 0)
    assert [c["pending"] + c["processing"] for c in report["shards"]] == \
        [sum(1 for e in entries if e.merchant_id % 8 == shard) for shard in range(8)]
    assert eight.ack(leased) == 2  # the leases moved with them
    assert sorted(eight.claim(now + 100, limit=100), key=repr) == sorted(entries[2:], key=repr)
    assert eight.reshard(1)["moved"] == 0


@pytest.mark.parametrize("rt", [8], indirect=True)
def test_the_sweep_claims_every_shard_of_the_runtime(rt):
    """reminding.sweep on a runtime with DUE_SET_SHARDS=8: wake-ups of stores in every shard
    (and so on every node) are claimed in small batches; each asks for a read, and is put back
    in its own store's shard to wait for it."""
    now = datetime.now(timezone.utc)
    stores = range(FIRST_MERCHANT, FIRST_MERCHANT + 16)
    rt.due.schedule([(now.timestamp() - 60, DueEntry(m, c, reminding.SETTLE_STAGE, reminding.WAKEUP_KEY))
                     for m in stores for c in (1, 2)])
    reads = []
    result = reminding.sweep(rt, now, lambda *a: pytest.fail("nothing to deliver"),
                             lambda m, c: reads.append((m, c)), batch=5)
    assert sorted(reads) == sorted((m, c) for m in stores for c in (1, 2))
    assert result.claimed == 32
    assert [c["pending"] for c in rt.due.counts()] == [4] * 8 and rt.due.processing_count() == 0
    assert rt.due.next_due() == pytest.approx(now.timestamp() + reminding.RECHECK_WAIT_SECONDS)
    for m in stores:
        assert rt.due.cancel_customer(m, 1) == 1 and rt.due.cancel_customer(m, 2) == 1


# -- the per-store budget ------------------------------------------------------------------------
def test_each_store_has_its_own_budget_and_leases_on_its_own_node(client, prefix, merchants):
    budget, keys = Budget(client, prefix), Keys(prefix)
    limits = Limits(plan_limit=2, plan_window=60, customer_limit=500, customer_window=600)
    now = 1_900_000_000.0
    store_keys = [keys.store(m) for m in merchants]
    for k in store_keys:  # a script's keys: one slot per store, different nodes
        slots = {client.keyslot(key) for key in (k.budget_plan, k.budget_customer, k.blocked_until, k.pending,
                                                  k.pages, k.inflight)}
        assert len(slots) == 1
    for m in merchants:
        assert budget.enqueue(m, 1, now) and budget.enqueue(m, 2, now) and budget.enqueue(m, 3, now)
        assert not budget.enqueue(m, 1, now)  # coalesced
    assert budget.backlog() == sorted(merchants)

    first = {m: budget.dispatch(m, limits, now) for m in merchants}
    for m, dispatch in first.items():  # each store spends its own two slots
        assert [r.customer_id for r in dispatch.reads] == [1, 2] and dispatch.wait > 0
        assert budget.holds(m, 1, dispatch.reads[0].lease)
        assert budget.dispatch(m, limits, now + 1).reads == []  # its window is full
        assert client.zcard(keys.store(m).inflight) == 2
    m0, m1, m2 = merchants
    assert budget.done(m0, 1, pages=1, lease=first[m0].reads[0].lease)
    assert not budget.done(m0, 2, lease="1.0")  # a stale lease frees nothing
    assert budget.retry_later(m1, 2, now + 5, lease=first[m1].reads[1].lease)
    assert budget.acquire(m2, limits, now + 61, need=2)  # a new window: two slots outside dispatch
    assert not budget.acquire(m2, limits, now + 61, need=1)

    # Past the window and every lease: the reads nobody finished are reaped and read again.
    later = now + 300
    again = budget.dispatch(m0, limits, later)
    assert again.reaped == 1 and sorted(r.customer_id for r in again.reads) == [2, 3]
    budget.block_until(m1, later + 30, later)
    assert budget.dispatch(m1, limits, later).reads == [] and budget.blocked(m1, later)
    assert budget.drop_store(m2) == 1  # customer 3 waited; the reaped ones are dropped with it
    assert m2 not in budget.backlog() and budget.waiting(m2) == 0


# -- the ledger: queue_reminder and deliver claims -------------------------------------------------
@pytest.mark.parametrize("rt", [1, 4], indirect=True, ids=["1-due-shard", "4-due-shards"])
def test_reminders_are_read_queued_and_delivered_once_per_store(rt, merchants, sandbox, reminders):
    for i, m in enumerate(merchants):
        customer = 7100 + i
        put_lots(sandbox, customer, 400 + i, days=3)
        assert sync.accept_event(rt, customer_event(m, customer)) == "queued"
        pump_inline(rt, m)
    received = wait_until(lambda: len(reminders.received) == 3 and reminders.received, message="three reminders")
    by_store = {r["body"]["merchant_id"]: r["body"] for r in received}
    assert sorted(by_store) == sorted(merchants)
    for i, m in enumerate(merchants):
        body = by_store[m]
        assert body["customer_id"] == 7100 + i and body["points_expiring"] == 400 + i and body["stage_days"] == 7
        record = rt.ledger.get(m, body["reminder_id"])
        assert record.state == "sent" and record.channels == {"log": "sent", "webhook": "sent"}
        assert rt.ledger.live_claims(m, body["customer_id"]) == []  # the claim went; the lot is marked
        assert rt.ledger.marks(m, body["customer_id"]).sent
        # The same reminder queued and delivered again (a redelivered task): refused by the ledger.
        assert delivery.queue_reminder(rt, record.reminder, 86400, rt.clock(), lambda *a: pytest.fail("published")) == "sent"
        assert delivery.deliver(rt, m, body["customer_id"], body["reminder_id"], rt.clock()) == "sent"
        assert rt.registry.counters(m)["reminders_sent"] == 1
        assert node_of(rt.store, rt.keys.store(m).reminder(body["reminder_id"])) == node_of(rt.store, rt.keys.store(m).state)
    assert len(reminders.received) == 3
    # Every delivery timer was acked or removed; what is left is each customer's next stage.
    left = rt.due.claim(rt.clock() + 10 * 86400, limit=100)
    assert sorted((e.merchant_id, e.customer_id, e.stage_days) for e in left) == \
        sorted((m, 7100 + i, 1) for i, m in enumerate(merchants)), left
    # A channel claimed by a live attempt is busy for another; the ledger's scripts run on the store's node.
    m = merchants[1]
    rid = by_store[m]["reminder_id"]
    rt.ledger.channel_result(m, rid, "webhook", "retry:test")
    assert rt.ledger.claim_channel(m, rid, "webhook", 5, rt.clock()) == "ok"
    assert rt.ledger.claim_channel(m, rid, "webhook", 6, rt.clock()).startswith("busy:")


# -- intake: the webhook's inbox, drained ----------------------------------------------------------
class RecordingQueue:
    def __init__(self):
        self.sent = []

    def enqueue(self, message: dict, task: str = "") -> None:
        self.sent.append((task, message))


def order_created(merchant_id: int, customer_id: int, order_id: int) -> bytes:
    body = sample("order.created.json")
    body["merchant"] = merchant_id
    body["data"]["id"] = order_id
    body["data"]["customer"]["id"] = customer_id
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def post(web, body: bytes):
    return web.post("/webhooks/salla", data=body, headers={"Content-Type": "application/json",
                                                          "X-Salla-Signature": sign(body, WEBHOOK_SECRET)})


def test_webhooks_wait_in_each_stores_inbox_and_are_drained(cluster_env, rt, merchants, sandbox, reminders):
    queue = RecordingQueue()
    settings = Settings.from_env(cluster_env)
    app = create_app(settings, redis_client=connect(settings, fail_fast=True), queue=queue).test_client()
    for i, m in enumerate(merchants):
        put_lots(sandbox, 7200 + i, 300, days=3)
        for order in (1, 2):  # two events of one customer: one inbox, one drain published
            assert post(app, order_created(m, 7200 + i, order)).json == {"status": "queued"}
        assert post(app, order_created(m, 7200 + i, 1)).json == {"status": "duplicate"}
    drains = [message["merchant_id"] for task, message in queue.sent if task.endswith("drain_intake")]
    assert sorted(drains) == sorted(merchants)
    assert [rt.intake.waiting(m) for m in merchants] == [2, 2, 2]
    assert len({node_of(rt.store, rt.keys.store(m).inbox) for m in merchants}) == 3
    assert sorted(rt.intake.stalled(rt.registry.merchants(), time.time() + 120)) == sorted(merchants)

    for m in merchants:  # workers/tasks.py drain_intake, inline
        batch = rt.intake.claim(m, rt.clock())
        assert len(batch) == 2 and rt.intake.claim(m, rt.clock()) == []  # leased
        outcomes = [sync.accept_event(rt, event) for _, event in batch]
        assert outcomes == ["queued", "coalesced"]
        rt.intake.done(m, [raw for raw, _ in batch])
        pump_inline(rt, m)
    assert [rt.intake.waiting(m) for m in merchants] == [0, 0, 0]
    received = wait_until(lambda: len(reminders.received) == 3 and reminders.received, message="three reminders")
    assert sorted(r["body"]["merchant_id"] for r in received) == sorted(merchants)
    assert {r["body"]["customer"]["name"] for r in received} == {"Mohammed Ali"}


# -- the registry, tokens, alarms and an uninstall's SCAN -----------------------------------------
def test_registry_tokens_alarms_and_uninstall_across_nodes(rt, merchants):
    for m in merchants:  # each writes the shared `stores` set and a key of the store's slot
        rt.registry.set_state(m, "active")
        rt.registry.set_config(m, plan_limit=360, store_name="Store")
        rt.tokens.save(m, StoreTokens("access", "refresh", time.time() + 3600, "customers.read"))
    assert rt.registry.merchants() == sorted(merchants)
    assert all(rt.tokens.load(m).access_token == "access" for m in merchants)
    assert rt.registry.config(merchants[0])["plan_limit"] == 360
    for name in ("a", "b", "c", "d", "e", "f"):  # keys spread over the nodes: found by a SCAN of each
        rt.alarms.raise_(name, f"alarm {name}")
    assert len({node_of(rt.store, rt.keys.alarm(n)) for n in "abcdef"}) > 1
    assert sorted(rt.alarms.active()) == list("abcdef")

    gone = merchants[0]
    rt.profiles.unsubscribe(gone, 1, time.time())
    rt.budget.enqueue(gone, 1, time.time())
    rt.registry.set_state(gone, "uninstalled")
    dropped = lifecycle.forget_store(rt, gone)
    assert dropped["dropped_syncs"] == 1 and dropped["keys_erased"] == 2  # tokens and the profile, found by SCAN
    assert rt.tokens.load(gone) is None
    left = {key.rsplit(":", 1)[-1] for key in rt.store.scan_iter(match=rt.keys.store(gone).pattern)}
    # The suppression entries (keyed hashes, no id) keep the opt-out through an uninstall.
    assert left <= {"state", "config", "counters", "stats", "statuses", "app-event-at", "suppressed"}
    assert rt.tokens.load(merchants[1]) is not None  # the other stores are untouched


# -- a real worker: broker on the plain Redis, state on the cluster ------------------------------
@pytest.mark.slow
def test_a_real_worker_with_its_state_on_the_cluster(cluster_env, client, merchants, sandbox, reminders, tmp_path):
    from devkit.sandbox import serve_in_thread

    cluster_env = dict(cluster_env, DUE_SET_SHARDS="4")  # the worker's due set in shards on the nodes

    worker = celery_worker(cluster_env, tmp_path / "worker.log", concurrency=1).start()
    try:
        with serve_in_thread(create_app(Settings.from_env(cluster_env))) as web:
            for i, m in enumerate(merchants[:2]):
                put_lots(sandbox, 7300 + i, 500 + i, days=3)
                body = order_created(m, 7300 + i, 1)
                answer = requests.post(web.url + "/webhooks/salla", data=body, timeout=10, headers={
                    "Content-Type": "application/json", "X-Salla-Signature": sign(body, WEBHOOK_SECRET)})
                assert answer.json() == {"status": "queued"}
            received = wait_until(lambda: len(reminders.received) >= 2 and reminders.received, timeout=60,
                                  message="two reminders from the worker")
    finally:
        worker.stop()
    assert sorted((r["body"]["merchant_id"], r["body"]["points_expiring"]) for r in received) == \
        sorted([(merchants[0], 500), (merchants[1], 501)])
    assert all(r["signature_valid"] for r in received)
    keys = Keys(cluster_env["REDIS_KEY_PREFIX"])
    for m in merchants[:2]:
        assert client.hget(keys.store(m).counters, "reminders_sent") == "1"
    # The worker's due set was in 4 shards: each store's next stage waits in its own shard.
    due = DueSet(client, cluster_env["REDIS_KEY_PREFIX"], shards=4)
    waiting = {shard: {DueEntry.decode(member) for member in client.zrange(due.shard_keys(shard)[2], 0, -1)}
               for shard in range(4)}
    assert all(e.merchant_id % 4 == shard for shard, found in waiting.items() for e in found)
    assert {(e.merchant_id, e.stage_days) for found in waiting.values() for e in found} == \
        {(merchants[0], 1), (merchants[1], 1)}
    assert "Traceback" not in worker.log_text()
