"""The reminder engine with real Redis and the sandbox over HTTP; time injected, never slept.

The last test runs it as deployed: a real worker and two real beat processes sweeping the
same due set at once.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import redis
import requests

from devkit.processes import ManagedProcess, celery_worker
from devkit.sandbox_seed import lot_row
from service.config.settings import Settings
from workers import reminding, sync
from workers.delivery import deliver
from service.state.due_set import DueEntry
from service.ops.runtime import build_runtime
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration
RIYADH = ZoneInfo("Asia/Riyadh")
M = 1305146709
NIGHT = datetime(2026, 11, 25, 22, 0, tzinfo=RIYADH)  # quiet hours (21:00-09:00)
OPENS = datetime(2026, 11, 26, 9, 0, tzinfo=RIYADH)


class Clock:
    def __init__(self, start: datetime):
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, moment: datetime) -> datetime:
        self.now = moment.timestamp()
        return moment.astimezone(timezone.utc)


class Engine:
    """The worker's functions in-process, with the clock injected and follow-up tasks run inline."""

    def __init__(self, env: dict, clock: Clock):
        settings = Settings.from_env(dict(env, QUIET_HOURS="21:00-09:00", SYNC_DEBOUNCE_SECONDS="0"))
        self.clock = clock
        self.rt = build_runtime(settings, redis.Redis.from_url(env["REDIS_URL"], decode_responses=True),
                                requests.Session(), clock=clock)

    def send(self, m, c, reminder_id):
        deliver(self.rt, m, c, reminder_id, self.clock())

    def read_now(self, m, c):
        self.rt.budget.enqueue(m, c, self.clock())
        self.pump(m)

    def pump(self, m):
        syncs = []
        sync.pump(self.rt, m, lambda *a: syncs.append(a), lambda *a: None)
        for merchant, customer, pages, lease in syncs:
            sync.sync_customer(self.rt, merchant, customer, pages, self.send, lease=lease)

    def event(self, customer_id, notifications=None):
        sync.accept_event(self.rt, {"event": "customer.updated", "merchant_id": M, "customer": {
            "id": customer_id, "name": f"Customer {customer_id}", "mobile": "+966500000000", "email": None,
            "notifications_enabled": notifications}})
        self.pump(M)

    def sweep(self, moment: datetime):
        return reminding.sweep(self.rt, self.clock.at(moment), self.send, self.read_now)

    def stats(self):
        from service.ops.admin_views import outcome_stats
        return outcome_stats(self.rt.store, self.rt.keys, M)


def put_lots(sandbox, customer_id: int, rows: list[dict]) -> None:
    assert requests.put(f"{sandbox.url}/_sandbox/customers/{customer_id}/lots", json=rows, timeout=5).status_code == 200


def rows(expiries: list[tuple[datetime, int, int]]) -> list[dict]:
    return [lot_row(points, used, expires, expires - timedelta(days=300), order_id=str(i))
            for i, (expires, points, used) in enumerate(expiries)]


@pytest.fixture
def engine(service_env, store):
    return Engine(service_env, Clock(NIGHT))


def test_quiet_hours_hold_and_release_earliest_expiry_first(engine, sandbox, reminders):
    put_lots(sandbox, 5001, rows([(NIGHT + timedelta(days=3), 400, 0)]))
    put_lots(sandbox, 5002, rows([(NIGHT + timedelta(days=2), 300, 0)]))
    engine.event(5001)
    engine.event(5002)
    assert reminders.received == []  # 22:00 Riyadh: held
    assert engine.sweep(OPENS - timedelta(minutes=1)).claimed == 0
    result = engine.sweep(OPENS + timedelta(minutes=1))
    assert result.claimed == 2 and result.reads_requested == 2  # the 22:00 read is older than an hour
    assert [r["body"]["customer_id"] for r in reminders.received] == [5002, 5001]  # earliest expiry first
    assert engine.stats()["7"]["reminders_sent"] == 2


def test_the_recheck_cancels_a_reminder_for_points_used_meanwhile(engine, sandbox, reminders):
    put_lots(sandbox, 5001, rows([(NIGHT + timedelta(days=3), 400, 0)]))
    engine.event(5001)
    put_lots(sandbox, 5001, rows([(NIGHT + timedelta(days=3), 400, 400)]))  # redeemed at 23:00
    engine.sweep(OPENS + timedelta(minutes=1))
    assert reminders.received == []
    assert engine.stats()["7"]["redeemed_before_reminder"] == 1


def test_points_used_in_part_leave_the_reminder(engine, sandbox, reminders):
    put_lots(sandbox, 5001, rows([(NIGHT + timedelta(days=3), 400, 0), (NIGHT + timedelta(days=4), 100, 0)]))
    engine.event(5001)
    put_lots(sandbox, 5001, rows([(NIGHT + timedelta(days=3), 400, 400), (NIGHT + timedelta(days=4), 100, 0)]))
    engine.sweep(OPENS + timedelta(minutes=1))
    [received] = reminders.received
    assert received["body"]["points_expiring"] == 100 and len(received["body"]["lots"]) == 1


def test_opting_out_cancels_pending_reminders(engine, sandbox, reminders):
    put_lots(sandbox, 5001, rows([(NIGHT + timedelta(days=3), 400, 0)]))
    engine.event(5001)
    due = engine.rt.due
    assert due.pending_count() > 0
    engine.event(5001, notifications=False)  # customer.updated with is_notifications_enabled false
    assert due.pending_count() == 0
    engine.event(5001)  # an order event (no flag) does not undo the opt-out
    assert engine.sweep(OPENS + timedelta(minutes=1)).claimed == 0 and reminders.received == []
    assert engine.stats()["0"]["opted_out_cancelled"] >= 1


def test_a_paused_store_sends_nothing_until_resumed(engine, sandbox, reminders):
    put_lots(sandbox, 5001, rows([(OPENS + timedelta(days=3), 400, 0)]))
    engine.rt.registry.set_config(M, paused=1)
    engine.clock.at(OPENS)
    engine.event(5001)
    assert reminders.received == []
    engine.rt.registry.set_config(M, paused=0)
    engine.sweep(OPENS + timedelta(hours=1))  # the paused store's look-again comes due
    assert len(reminders.received) == 1


def test_point_value_is_carried(engine, sandbox, reminders):
    engine.rt.registry.set_config(M, point_value_sar=0.05)
    put_lots(sandbox, 5001, rows([(OPENS + timedelta(days=3), 400, 0)]))
    engine.clock.at(OPENS)
    engine.event(5001)
    [received] = reminders.received
    assert received["body"]["value_sar"] == 20.0 and "20.00" in received["body"]["message"]


def test_points_saved_and_lost_across_a_sequence_of_reads(engine, sandbox, reminders):
    expires = OPENS + timedelta(days=3, hours=2)
    put_lots(sandbox, 5001, rows([(expires, 500, 0)]))
    engine.clock.at(OPENS)
    engine.event(5001)  # 7-day reminder: 500 points
    put_lots(sandbox, 5001, rows([(expires, 500, 200)]))
    engine.clock.at(OPENS + timedelta(days=1))
    engine.event(5001)  # 200 used after the reminder: saved
    engine.sweep(expires - timedelta(days=1))  # wakes up: the 1-day reminder (300 left)
    put_lots(sandbox, 5001, rows([(expires, 500, 350)]))
    engine.sweep(expires + timedelta(hours=1))  # settles after expiry: 150 more used, 150 lost
    stats = engine.stats()
    assert stats["7"]["reminders_sent"] == 1 and stats["7"]["points_reminded"] == 500
    assert stats["7"]["points_saved"] == 200
    assert stats["1"]["reminders_sent"] == 1 and stats["1"]["points_reminded"] == 300
    assert stats["1"]["points_saved"] == 150 and stats["1"]["points_lost"] == 150
    assert [r["body"]["stage_days"] for r in reminders.received] == [7, 1]


@pytest.mark.slow
def test_two_beat_processes_and_a_worker_deliver_thousands_of_due_reminders_once(service_env, store, reminders,
                                                                                 tmp_path):
    count = 2000
    env = dict(service_env, SWEEP_INTERVAL_SECONDS="1", REMINDER_CHANNELS="webhook")
    engine = Engine(env, Clock(datetime.now(timezone.utc)))
    now = datetime.now(timezone.utc)
    due = engine.rt.due
    from service.domain.events import Customer
    from service.domain.loyalty import parse_history
    entries = []
    for customer_id in range(10_000, 10_000 + count):
        lots, _ = parse_history(rows([(now + timedelta(days=3), 100 + customer_id % 7, 0)]))
        reminding.save_lots(engine.rt, M, customer_id, lots, now)  # a fresh read: no Salla call needed
        engine.rt.profiles.save(M, Customer(customer_id, "", None, None, None))
        entries.append((now.timestamp() - 1, DueEntry(M, customer_id, 7, reminding.WAKEUP_KEY)))
    due.schedule(entries)
    beats = [ManagedProcess([__import__("sys").executable, "-m", "celery", "-A", "workers", "beat", "--loglevel=INFO",
                             f"--schedule={tmp_path}/beat{i}"], env, tmp_path / f"beat{i}.log",
                            ready_text="beat: Starting") for i in range(2)]
    with celery_worker(env, tmp_path / "worker.log", concurrency=2, name="sweeper") as worker:
        for beat in beats:
            beat.start()
        try:
            wait_until(lambda: len(reminders.received) >= count, timeout=240, interval=0.5,
                       message=f"{count} reminders")
            time.sleep(3)  # more sweeps run; nothing more may arrive
        finally:
            for beat in beats:
                beat.stop()
        log = worker.log_text()
    # Delivery is deduplicated per reminder id, so count claims too: a double claim shows here.
    import re
    claimed = sum(int(n) for n in re.findall(r"sweep: claimed=(\d+)", log))
    assert claimed == count
    assert log.count("Task workers.tasks.sweep[") >= 4  # both beats really sent sweeps
    ids = [r["body"]["reminder_id"] for r in reminders.received]
    assert len(ids) == count and len(set(ids)) == count
    assert {r["body"]["customer_id"] for r in reminders.received} == set(range(10_000, 10_000 + count))
    assert store.zcount(due.scheduled_key, "-inf", time.time()) == 0  # nothing due left behind
    assert store.zcard(due.processing_key) == 0
