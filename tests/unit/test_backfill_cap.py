"""The fleet-wide cap on stores backfilling at once (issue 18, goal 4: install storms), on
fakeredis: BACKFILL_MAX_STORES slots, the rest queued in install order and shown in
`backfill-status`, a slot freed by a finish, a failure, an uninstall or a lease nobody renewed."""
import json

import fakeredis
import pytest
import requests

from service.web.app import create_app
from service.cli import main as cli
from service.config.settings import SettingsError
from service.state.stores import NEEDS_REAUTH, UNINSTALLED
from tests.conftest import TOKEN_KEY, make_settings
from service.ops import backfill as backfill_runs  # start, state, progress, fleet: what the web and CLI call
from workers import backfill, lifecycle  # admit, release, the run
from service.ops.runtime import build_runtime

ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}
T0 = 1_790_000_000.0


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def runtime(max_stores=2, server=None, clock=None, max_reads=4):
    store = fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), decode_responses=True)
    rt = build_runtime(make_settings(BACKFILL_MAX_STORES=str(max_stores), BACKFILL_MAX_READS=str(max_reads)),
                       store, requests.Session(), clock=clock or Clock())
    rt.woken = []  # stands in for the worker's "pump this store now"
    rt.wake = rt.woken.append
    return rt


def start(rt, merchant_id, at=None):
    now = rt.clock() if at is None else at
    return backfill_runs.start(rt.store, rt.keys, merchant_id, now, "app.store.authorize",
                          max_stores=rt.settings.backfill_max_stores)


def states(rt, merchants):
    return {m: backfill_runs.state(rt.store, rt.keys, m).get("state") for m in merchants}


def finish(rt, merchant_id):
    """The run's last read is done: the listing is over and nothing waits."""
    rt.store.hset(rt.keys.store(merchant_id).backfill, "listing_done", 1)
    backfill.read_done(rt, merchant_id, 1, "read", 0)  # not handed out by the backfill: no count
    backfill.want_page(rt, merchant_id)  # the pump that sees it finished


def test_the_setting_has_a_default_and_refuses_nonsense():
    """Issue 18 goal 4: BACKFILL_MAX_STORES, a new setting with a sensible default."""
    assert make_settings().backfill_max_stores == backfill_runs.DEFAULT_MAX_STORES == 100
    assert make_settings(BACKFILL_MAX_STORES="7").backfill_max_stores == 7
    for wrong in ("0", "-1", "many"):
        with pytest.raises(SettingsError, match="BACKFILL_MAX_STORES"):
            make_settings(BACKFILL_MAX_STORES=wrong)


def test_at_most_the_cap_backfill_and_the_rest_wait_in_install_order():
    """Issue 18 goal 4: a fleet-wide cap; the rest queued in install order."""
    rt = runtime(max_stores=2)
    for offset, merchant in enumerate([5, 3, 9, 1]):  # installed in this order, ids not sorted
        started = start(rt, merchant, at=T0 + offset)
        assert started["started"] == "1"
    assert states(rt, [5, 3, 9, 1]) == {5: "running", 3: "running", 9: "queued", 1: "queued"}
    assert backfill_runs.fleet(rt.store, rt.keys, rt.settings)["queued"] == [
        {"merchant_id": 9, "position": 1, "queued_at": int(T0 + 2)},
        {"merchant_id": 1, "position": 2, "queued_at": int(T0 + 3)}]
    # A queued store lists nothing and holds no slot, however often it is pumped.
    assert not backfill.want_page(rt, 9) and states(rt, [9]) == {9: "queued"}
    # Starting it again keeps its place; a running store cannot take a second slot.
    assert start(rt, 9)["started"] == "0" and start(rt, 5)["started"] == "0"
    assert [q["merchant_id"] for q in backfill_runs.fleet(rt.store, rt.keys, rt.settings)["queued"]] == [9, 1]
    # The first slot to free goes to the first store queued, the next to the second.
    finish(rt, 3)
    assert states(rt, [5, 3, 9, 1]) == {5: "running", 3: "done", 9: "running", 1: "queued"}
    assert rt.woken == [9]  # its pump is published at once, not at beat's next tick
    finish(rt, 5)
    assert states(rt, [1]) == {1: "running"} and rt.woken == [9, 1]
    assert backfill_runs.fleet(rt.store, rt.keys, rt.settings)["running"] == [1, 9]


def test_backfill_status_shows_the_queue_in_the_cli_and_the_admin_api(monkeypatch, capsys):
    """Issue 18 goal 4: the queue visible in `backfill-status` (CLI and admin API)."""
    server = fakeredis.FakeServer()
    rt = runtime(max_stores=1, server=server)
    start(rt, 11, at=T0)
    start(rt, 12, at=T0 + 1)
    start(rt, 13, at=T0 + 2)
    view = backfill_runs.progress(rt.store, rt.keys, rt.settings, {}, 13)
    assert view["state"] == "queued" and view["queue_position"] == 2 and view["queued_at"] == int(T0 + 2)
    assert view["started_at"] is None
    env = {"SALLA_WEBHOOK_SECRET": "x", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "BACKFILL_MAX_STORES": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("service.cli.connect", lambda settings: fakeredis.FakeRedis(server=server, decode_responses=True))
    assert cli(["--json", "backfill-status", "12"]) == 0
    assert json.loads(capsys.readouterr().out)["backfill"]["queue_position"] == 1
    assert cli(["--json", "backfill-status"]) == 0
    fleet = json.loads(capsys.readouterr().out)
    assert fleet["max_stores"] == 1 and fleet["running"] == [11]
    assert [q["merchant_id"] for q in fleet["queued"]] == [12, 13] and fleet["queued_total"] == 2

    app = create_app(make_settings(ADMIN_TOKEN=ADMIN["Authorization"].split()[1], BACKFILL_MAX_STORES="1"),
                     redis_client=fakeredis.FakeRedis(server=server, decode_responses=True))
    client = app.test_client()
    answer = client.get("/admin/backfills", headers=ADMIN)
    assert answer.status_code == 200 and answer.get_json() == fleet
    assert client.get("/admin/backfills").status_code == 401
    assert client.get("/admin/backfills?limit=0", headers=ADMIN).status_code == 400
    assert client.get("/admin/backfills?limit=x", headers=ADMIN).status_code == 400
    assert client.get("/admin/backfills?limit=1", headers=ADMIN).get_json()["queued"] == fleet["queued"][:1]
    assert client.get("/admin/stores/13/backfill", headers=ADMIN).get_json()["backfill"]["queue_position"] == 2


def test_a_failed_run_frees_its_slot():
    """Issue 18 goal 4: a slot frees on failure."""
    rt = runtime(max_stores=1)
    start(rt, 21)
    start(rt, 22)
    rt.registry.set_state(21, NEEDS_REAUTH, "the token was refused")
    assert backfill.list_page(rt, 21) == "failed"
    assert states(rt, [21, 22]) == {21: "failed", 22: "running"} and rt.woken == [22]


def test_an_uninstall_frees_its_slot_and_its_place_in_the_queue():
    """Issue 18 goal 4: a slot frees on uninstall; an uninstalled store leaves the queue."""
    rt = runtime(max_stores=1)
    for merchant in (31, 32, 33):
        start(rt, merchant)
    rt.registry.set_state(32, UNINSTALLED)
    lifecycle.forget_store(rt, 32)
    assert [q["merchant_id"] for q in backfill_runs.fleet(rt.store, rt.keys, rt.settings)["queued"]] == [33]
    rt.registry.set_state(31, UNINSTALLED)
    lifecycle.forget_store(rt, 31)
    assert states(rt, [33]) == {33: "running"} and rt.woken == [33]
    assert backfill_runs.fleet(rt.store, rt.keys, rt.settings)["running"] == [33]


def test_a_slot_nobody_renews_runs_out_and_goes_to_the_next_store():
    """Issue 18 goal 4: a crashed worker's lease running out frees the slot (no slot leaks)."""
    clock = Clock()
    rt = runtime(max_stores=1, clock=clock)
    start(rt, 41)
    start(rt, 42)
    # Pumps keep the slot: each one renews the lease.
    for _ in range(3):
        clock.now += backfill_runs.SLOT_LEASE_SECONDS - 1
        backfill.want_page(rt, 41)
        assert backfill.admit(rt, clock.now) == []
    # Every worker died: nobody pumps 41. Beat's tick (pump-backlog) after the lease ran out
    # gives the slot to the next store; 41 waits behind it, its progress kept.
    clock.now += backfill_runs.SLOT_LEASE_SECONDS + 1
    assert backfill.admit(rt, clock.now) == [42]
    assert states(rt, [42]) == {42: "running"} and rt.woken == [42]
    assert [q["merchant_id"] for q in backfill_runs.fleet(rt.store, rt.keys, rt.settings)["queued"]] == [41]
    # When 41's pump comes back it sees it lost the slot: queued, nothing listed meanwhile.
    assert not backfill.want_page(rt, 41) and states(rt, [41]) == {41: "queued"}
    finish(rt, 42)
    assert states(rt, [41]) == {41: "running"}


def test_no_slot_leaks_whatever_ends_the_runs():
    """Issue 18 goal 4: no slot may leak; every queued store gets its turn."""
    clock = Clock()
    rt = runtime(max_stores=3, clock=clock)
    merchants = list(range(100, 112))
    for merchant in merchants:
        start(rt, merchant)
        clock.now += 1
    ends = iter(["done", "failed", "uninstalled", "lease"] * 3)  # each end for three stores
    done = set()
    while len(done) < len(merchants):
        fleet = backfill_runs.fleet(rt.store, rt.keys, rt.settings)
        assert len(fleet["running"]) <= 3
        for merchant in set(fleet["running"]) - done:
            end = next(ends)
            if end == "done":
                finish(rt, merchant)
            elif end == "failed":
                rt.registry.set_state(merchant, NEEDS_REAUTH, "refused")
                backfill.list_page(rt, merchant)
            elif end == "uninstalled":
                rt.registry.set_state(merchant, UNINSTALLED)
                lifecycle.forget_store(rt, merchant)
            else:
                # A store that cannot be read any more is never pumped (sync.pump returns at
                # once): its lease runs out, and when it comes round again its run is failed.
                rt.registry.set_state(merchant, NEEDS_REAUTH, "refused")
            done.add(merchant)
        clock.now += backfill_runs.SLOT_LEASE_SECONDS + 1
        backfill.admit(rt, clock.now)
    clock.now += backfill_runs.SLOT_LEASE_SECONDS + 1
    backfill.admit(rt, clock.now)
    fleet = backfill_runs.fleet(rt.store, rt.keys, rt.settings)
    assert fleet["running"] == [] and fleet["queued"] == []
    assert all(state in ("done", "failed", None) for state in states(rt, merchants).values())


def test_a_store_has_at_most_two_backfill_reads_in_flight_and_each_finished_one_pumps_it_again():
    """Issue 18 goal 4: event-driven reads keep their latency while backfills go on. However
    many stores backfill, each has at most Budget.BACKFILL_IN_FLIGHT reads in the reads queue
    ahead of an event-driven one; the next is handed out when one finishes, not in a burst."""
    rt = runtime()
    k = rt.keys.store(7)
    start(rt, 7)
    rt.store.zadd(k.backfill_pending, {str(c): c for c in range(100, 160)})
    rt.store.sadd(k.backfill_seen, *[str(c) for c in range(100, 160)])
    limits = rt.limits(7)
    first = rt.budget.dispatch(7, limits, rt.clock())
    assert [r.customer_id for r in first.reads] == [100, 101] and first.wait == 30  # a safety-net look
    assert rt.budget.dispatch(7, limits, rt.clock()).reads == []  # full: nothing more until one ends
    # An event-driven customer is not held back by them.
    rt.budget.enqueue(7, 5, rt.clock() - 1)
    assert [r.customer_id for r in rt.budget.dispatch(7, limits, rt.clock()).reads] == [5]
    rt.budget.done(7, 100, lease=first.reads[0].lease)
    backfill.read_done(rt, 7, 100, "read", 0)
    assert rt.woken[-1] == 7  # the store is pumped again at once
    assert [r.customer_id for r in rt.budget.dispatch(7, limits, rt.clock()).reads] == [102]


def test_a_backfill_read_whose_lease_ran_out_goes_back_to_the_backfills_line():
    """Issue 18 goal 4: a backfill read whose worker died goes back to the backfill's line when
    its lease runs out (an event-driven read's lease: it is handed out only when it can run at
    once), not ahead of the event-driven reads."""
    clock = Clock()
    rt = runtime(clock=clock)
    k = rt.keys.store(7)
    start(rt, 7)
    rt.store.zadd(k.backfill_pending, {"100": 0})
    first = rt.budget.dispatch(7, rt.limits(7), clock.now)
    assert float(first.reads[0].lease) == clock.now + rt.budget.LEASE_BASE_SECONDS + rt.budget.LEASE_PER_PAGE_SECONDS
    clock.now = float(first.reads[0].lease) + 1
    again = rt.budget.dispatch(7, rt.limits(7), clock.now)
    assert again.reaped == 1 and [(r.customer_id, r.backfill) for r in again.reads] == [(100, True)]
    assert rt.store.zcard(k.pending) == 0


def test_a_backfill_wake_up_pump_leaves_the_scheduled_pump_alone(monkeypatch):
    """Issue 18 goal 4: a wake-up per backfill read must not free the store's pump flag, or every
    backfill read would schedule one more pump in the reads queue, ahead of event-driven reads."""
    from workers import tasks

    rt = runtime()
    published = []
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    monkeypatch.setattr(tasks.pump_store, "apply_async", lambda args, **options: published.append((args, options)))
    tasks.pump_soon(7)
    assert published == [([7, True], {})]  # the reads queue, as every pump: no queue of its own
    assert rt.budget.claim_pump(7, rt.clock() + 30, 35)
    tasks.pump_store.run(7, True)
    assert not rt.budget.claim_pump(7, rt.clock() + 30, 35)  # the scheduled pump still holds it
    tasks.pump_store.run(7)
    assert rt.budget.claim_pump(7, rt.clock() + 30, 35)


def test_a_worker_runtime_wakes_stores_through_the_tasks(monkeypatch):
    """Issue 18 goal 4 in the package layout: service never imports workers, so the worker's
    runtime gets its "pump this store now" from workers/tasks.py (wake_with), not by import."""
    from service.ops import runtime as runtimes
    from workers import tasks

    monkeypatch.setattr(runtimes, "_local", type(runtimes._local)())  # a fresh thread's runtime
    monkeypatch.setattr(runtimes, "_settings", lambda: make_settings())
    assert runtimes._wake is tasks.pump_soon
    assert runtimes.runtime().wake is tasks.pump_soon


def backfilling(rt, merchants, customers=10):
    """Stores whose runs have their customers listed, waiting to be read."""
    for merchant in merchants:
        start(rt, merchant)
        k = rt.keys.store(merchant)
        ids = [str(merchant * 1000 + n) for n in range(customers)]
        rt.store.zadd(k.backfill_pending, {c: n for n, c in enumerate(ids)})
        rt.store.sadd(k.backfill_seen, *ids)


def pump(rt, merchant, handed):
    """workers/sync.py's pump, its reads recorded instead of published (a moment later)."""
    from workers import sync
    rt.clock.now += 0.01
    return sync.pump(rt, merchant, lambda m, c, pages, lease: handed.append((m, c, lease)), lambda m, wait: None)


def end_read(rt, handed, merchant):
    """The oldest read of `merchant` handed out ends, as workers/sync.py ends one (a moment later)."""
    rt.clock.now += 0.01
    m, c, lease = next(read for read in handed if read[0] == merchant)
    handed.remove((m, c, lease))
    rt.budget.done(m, c, lease=lease)
    backfill.read_done(rt, m, c, "read", 0)


def test_backfill_reads_in_flight_fleet_wide_never_exceed_the_setting_and_places_go_round_the_stores(monkeypatch):
    """Issue 18 goal 4: BACKFILL_MAX_READS backfill reads in flight at most, however many stores
    backfill: the reads queue never holds more of them ahead of an event-driven read. A store that
    finds no place spends no budget (a read is handed out only when it can run), waits in line,
    and each read that ends passes its place to the first store in line: fair between stores."""
    monkeypatch.setattr("workers.sync.usable", lambda registry, merchant: True)
    rt = runtime(max_stores=10, max_reads=3)
    backfilling(rt, [1, 2, 3, 4])
    handed = []
    for merchant in (1, 2, 3, 4):
        pump(rt, merchant, handed)
    assert [m for m, _, _ in handed] == [1, 1, 2]  # two per store at most, three fleet-wide
    assert rt.budget.backfill_reads(rt.clock()) == 3
    assert rt.store.zrange(rt.keys.backfill_starved, 0, -1) == ["3", "4"]
    for merchant in (3, 4):  # waiting for a place, they spent none of their Salla budget
        assert rt.store.zcard(rt.keys.store(merchant).budget_plan) == 0
    # An event-driven read of a starved store is not held back.
    rt.budget.enqueue(3, 5, rt.clock() - 1)
    pump(rt, 3, handed)
    assert (3, 5) in [(m, c) for m, c, _ in handed] and rt.budget.backfill_reads(rt.clock()) == 3
    end_read(rt, handed, 3)
    # Places pass on in turn: the first store in line, then the next; a store that had its turn
    # and has more waiting goes to the back.
    end_read(rt, handed, 1)
    assert rt.woken == [3]
    pump(rt, 3, handed)
    end_read(rt, handed, 1)
    assert rt.woken == [3, 4]
    pump(rt, 4, handed)
    end_read(rt, handed, 2)
    assert rt.woken == [3, 4, 1]  # 1 joined the line before 2
    for _ in range(200):  # everything read, never more than three at once
        assert rt.budget.backfill_reads(rt.clock()) <= 3
        assert len(handed) <= 3 and not rt.store.zcard(rt.keys.store(3).pending)  # no read reaped
        if not handed:
            break
        merchant = handed[0][0]
        end_read(rt, handed, merchant)
        while rt.woken:
            pump(rt, rt.woken.pop(0), handed)
    assert not handed and all(rt.store.zcard(rt.keys.store(m).backfill_pending) == 0 for m in (1, 2, 3, 4))
    assert rt.budget.backfill_reads(rt.clock()) == 0 and rt.store.zcard(rt.keys.backfill_starved) == 0


def test_a_place_held_by_a_dead_pump_or_read_comes_back_by_itself():
    """Issue 18 goal 4: a pump that died between its reservation and its dispatch, or a read whose
    worker died, holds its fleet-wide place only until its lease runs out."""
    clock = Clock()
    rt = runtime(clock=clock, max_reads=1)
    backfilling(rt, [1, 2])
    assert len(rt.budget.reserve_backfill(1, clock.now, 1)) == 1  # and then the pump died
    assert rt.budget.reserve_backfill(2, clock.now, 1) == []
    clock.now += rt.budget.LEASE_BASE_SECONDS + 1
    assert len(rt.budget.reserve_backfill(2, clock.now, 1)) == 1


def test_a_page_of_customers_takes_a_fleet_place_too(monkeypatch):
    """Issue 18 goal 4: GET /customers is a Salla request in a reads process as a read is: a store
    lists its next page only with a fleet-wide place, and the place is free when the page is."""
    monkeypatch.setattr("workers.sync.usable", lambda registry, merchant: True)
    rt = runtime(max_stores=10, max_reads=1)
    backfilling(rt, [1])
    start(rt, 2)  # nothing listed yet
    handed = []
    pump(rt, 1, handed)
    assert len(handed) == 1 and not backfill.want_page(rt, 2)
    assert rt.store.zrange(rt.keys.backfill_starved, 0, -1) == ["2"]
    end_read(rt, handed, 1)
    assert rt.woken == [2] and backfill.want_page(rt, 2)
    assert rt.budget.backfill_reads(rt.clock()) == 1  # the listing's
    monkeypatch.setattr(backfill, "_list_page", lambda rt, merchant: "listed")
    rt.woken.clear()
    backfill.list_page(rt, 2)
    assert rt.budget.backfill_reads(rt.clock()) == 0 and rt.woken == [1]  # 1 waited meanwhile


def test_a_store_whose_backfill_waits_for_a_place_still_reads_an_event_when_it_is_due():
    """Issue 18 goal 4 (bench/storm.py: a tail of ~4 s while the median stayed): an event's
    customer waits SYNC_DEBOUNCE_SECONDS before its read; the pump that comes before then must
    look again at that moment, not at the backfill's safety-net look 30 s on, when the store's
    backfill waits for a fleet-wide place (its wake-up only comes when a place frees)."""
    rt = runtime()
    k = rt.keys.store(7)
    start(rt, 7)
    rt.store.zadd(k.backfill_pending, {"100": 0})
    now = rt.clock()
    rt.budget.enqueue(7, 5, now + 0.2)  # debounced
    first = rt.budget.dispatch(7, rt.limits(7), now, backfill_room=0)  # no place free fleet-wide
    assert first.reads == [] and first.wait == pytest.approx(0.2)
    assert rt.budget.dispatch(7, rt.limits(7), now + 0.2, backfill_room=0).reads[0].customer_id == 5


def test_a_backfill_read_put_back_passes_its_place_on_at_once(monkeypatch):
    """Issue 18 goal 4: a backfill read that went back in line (429, timeout) frees its fleet-wide
    place then, not when its lease runs out 45 s later, and a store in line is woken; an uninstalled
    store leaves the line (its wake-up would be lost on it)."""
    monkeypatch.setattr("workers.sync.usable", lambda registry, merchant: True)
    rt = runtime(max_stores=10, max_reads=1)
    backfilling(rt, [1, 2, 3])
    handed = []
    for merchant in (1, 2, 3):
        pump(rt, merchant, handed)
    assert len(handed) == 1 and rt.store.zrange(rt.keys.backfill_starved, 0, -1) == ["2", "3"]
    rt.registry.set_state(2, UNINSTALLED)
    lifecycle.forget_store(rt, 2)
    m, c, lease = handed.pop()
    rt.budget.retry_later(m, c, rt.clock() + 5, lease=lease)
    backfill.read_put_back(rt, m, c)
    assert rt.budget.backfill_reads(rt.clock()) == 0 and rt.woken == [3]
