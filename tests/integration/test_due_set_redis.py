"""The due set on a real Redis: concurrent sweepers, leases, cancellation, memory.

Uses REDIS_URL's server (default 127.0.0.1:6379) if it answers, else a throwaway redis-server.
The integration tests' database (tests/integration/conftest.py: database_number), a fresh key prefix
per test, and only this test's keys are deleted afterwards: the database is never flushed here.
"""
from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from urllib.parse import urlparse, urlunparse

import pytest
import redis

from devkit.redis_server import RedisServer, redis_answers
from tests.integration.conftest import database_number
from service.state.due_set import DueEntry, DueSet

pytestmark = pytest.mark.integration

NOW = 1_780_000_000.0
LEASE = 60.0


@pytest.fixture(scope="module")
def due_redis_url(tmp_path_factory):
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    server = None
    if not redis_answers(url):
        server = RedisServer(tmp_path_factory.mktemp("due-redis"), appendonly=False).start()
        url = server.url
    yield urlunparse(urlparse(url)._replace(path=f"/{database_number()}"))
    if server:
        server.stop()


@pytest.fixture
def prefix(due_redis_url):
    prefix = f"test-due-{uuid.uuid4().hex[:12]}:"
    yield prefix
    cleaner = redis.Redis.from_url(due_redis_url)
    cleaner.delete(*DueSet(cleaner, prefix, shards=4).keys)  # every shard any test here writes
    cleaner.close()


@pytest.fixture(params=[(True, 1), (False, 1), (True, 4)], ids=["decoded", "bytes", "decoded-4-shards"])
def connect(request, due_redis_url, prefix):
    """Opens a DueSet on its own connection, as each sweeper process would; in 1 or 4 shards."""
    clients: list[redis.Redis] = []
    decoded, shards = request.param

    def open_set(**options) -> DueSet:
        client = redis.Redis.from_url(due_redis_url, decode_responses=decoded)
        clients.append(client)
        return DueSet(client, prefix, **{"lease_seconds": LEASE, "shards": shards, **options})

    yield open_set
    for client in clients:
        client.close()


def entries(count: int, merchant: int = 1305146709, stores: int = 1) -> list[DueEntry]:
    """`stores` > 1: spread over that many consecutive merchant ids (so over the shards)."""
    return [DueEntry.for_reminder(merchant + i % stores, 200_000_000 + i, (30, 7, 1)[i % 3], uuid.uuid4().hex)
            for i in range(count)]


def schedule_all(due: DueSet, items: list[DueEntry], at: float = NOW - 10) -> None:
    for start in range(0, len(items), 500):
        due.schedule((at + (i % 97), e) for i, e in enumerate(items[start:start + 500], start))


def sweep(due: DueSet, now: float, batch: int, out: list[DueEntry], go: threading.Barrier,
          keep_going=lambda: False) -> None:
    go.wait()
    while True:
        claimed = due.claim(now, batch)
        if claimed:
            out.extend(claimed)
            due.ack(claimed)
        elif not keep_going():
            return


def run_sweepers(sweepers: list[DueSet], now: float, batch: int, keep_going=lambda: False,
                 also=None) -> list[list[DueEntry]]:
    results: list[list[DueEntry]] = [[] for _ in sweepers]
    go = threading.Barrier(len(sweepers) + (1 if also else 0))
    threads = [threading.Thread(target=sweep, args=(due, now, batch, out, go, keep_going))
               for due, out in zip(sweepers, results)]
    if also:
        threads.append(threading.Thread(target=also, args=(go,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a sweeper did not finish"
    return results


def test_two_sweepers_never_claim_the_same_entry_and_leave_none_behind(connect):
    first, second = connect(), connect()
    items = entries(4000, stores=8)
    schedule_all(first, items)
    got_first, got_second = run_sweepers([first, second], NOW + 100, batch=7)
    counts = Counter(got_first + got_second)
    assert not [e for e, n in counts.items() if n > 1], "an entry was claimed twice"
    assert set(counts) == set(items)
    assert first.pending_count() == 0 and first.processing_count() == 0
    assert all(first.redis.zcard(key) == 0 for key in first.keys)


def test_sweepers_racing_a_sync_that_schedules_claim_each_entry_once(connect):
    scheduler, first, second = connect(), connect(), connect()
    items = entries(3000, stores=8)
    done = threading.Event()

    def sync(go: threading.Barrier) -> None:
        go.wait()
        for start in range(0, len(items), 50):
            scheduler.schedule((NOW, e) for e in items[start:start + 50])
        done.set()

    got = run_sweepers([first, second], NOW, batch=5, keep_going=lambda: not done.is_set(), also=sync)
    counts = Counter(got[0] + got[1])
    assert max(counts.values()) == 1 and set(counts) == set(items)


def test_a_dead_sweepers_entries_come_back_after_the_lease(connect):
    dying, survivor = connect(), connect()
    items = entries(300, stores=8)
    schedule_all(dying, items)
    lost = dying.claim(NOW + 100, 120)  # and never acks
    assert len(lost) == 120 and dying.processing_count() == 120
    assert survivor.requeue_expired(NOW + 100 + LEASE - 1) == 0
    assert survivor.requeue_expired(NOW + 100 + LEASE, limit=50) == 50
    recovered: list[DueEntry] = []
    while batch := survivor.claim(NOW + 100 + LEASE, 40):
        recovered += batch
        survivor.ack(batch)
    assert Counter(recovered) == Counter(items)
    assert survivor.processing_count() == 0


def test_cancel_customer_and_cancel_store(connect):
    due = connect(batch=1000)
    store = entries(2500, merchant=77)
    other_store = entries(10, merchant=78)
    customer = [DueEntry.for_reminder(77, 5, stage, uuid.uuid4().hex) for stage in (30, 7, 1)]
    schedule_all(due, store + other_store + customer)
    leased = due.claim(NOW + 100, 300)
    assert due.cancel_customer(77, 5) == 3
    assert due.cancel_customer(77, 5) == 0
    assert due.cancel_store(77) == 2500
    assert due.ack(leased) == sum(e.merchant_id == 78 for e in leased)
    left = set(due.claim(NOW + 100, 100))
    assert left | {e for e in leased if e.merchant_id == 78} == set(other_store)


def test_scheduling_the_same_entry_twice_keeps_one(connect):
    due = connect()
    [item] = entries(1)
    due.schedule([(NOW + 50, item)])
    due.schedule([(NOW + 20, item)])
    assert due.pending_count() == 1
    assert due.claim(NOW + 19, 10) == []
    assert due.claim(NOW + 20, 10) == [item]


def test_memory_per_scheduled_reminder_is_within_300_bytes(connect):
    due = connect()
    count = 20_000
    schedule_all(due, entries(count))
    used = sum(due.redis.memory_usage(key, samples=0) or 0 for key in due.keys)
    assert used / count <= 300, f"{used / count:.0f} bytes per reminder"
