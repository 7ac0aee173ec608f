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


def runtime(max_stores=2, server=None, clock=None):
    store = fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), decode_responses=True)
    rt = build_runtime(make_settings(BACKFILL_MAX_STORES=str(max_stores)), store, requests.Session(),
                       clock=clock or Clock())
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


def test_backfill_reads_go_to_a_queue_of_their_own(monkeypatch):
    """Issue 18 goal 4: event-driven reads never wait in line behind a storm's backfill reads:
    those go to the `backfill` queue, which the reads worker takes from in turn with `reads`."""
    from service.config.celery_config import BACKFILL_LIST_TASK, BACKFILL_QUEUE, TASK_ROUTES
    from workers import sync, tasks

    rt = runtime()
    k = rt.keys.store(7)
    start(rt, 7)
    rt.store.zadd(k.backfill_pending, {"100": 0})
    rt.budget.enqueue(7, 5, rt.clock() - 1)
    published = []
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    monkeypatch.setattr(tasks.sync_customer, "apply_async", lambda args, **options: published.append((args[1], options)))
    sync.pump(rt, 7, tasks._send_sync, lambda *a: None)
    assert published == [(5, {}), (100, {"queue": BACKFILL_QUEUE})]
    assert TASK_ROUTES[BACKFILL_LIST_TASK] == {"queue": BACKFILL_QUEUE}


def test_a_backfill_read_whose_lease_ran_out_goes_back_to_the_backfills_line():
    """Issue 18 goal 4: in a storm a backfill read may wait in its queue a long time; its lease
    is ten times an event-driven read's, and when it does run out the read goes back to the
    backfill's line, not ahead of the event-driven reads."""
    clock = Clock()
    rt = runtime(clock=clock)
    k = rt.keys.store(7)
    start(rt, 7)
    rt.store.zadd(k.backfill_pending, {"100": 0})
    first = rt.budget.dispatch(7, rt.limits(7), clock.now)
    assert float(first.reads[0].lease) == clock.now + 10 * rt.budget.LEASE_BASE_SECONDS + rt.budget.LEASE_PER_PAGE_SECONDS
    clock.now = float(first.reads[0].lease) + 1
    again = rt.budget.dispatch(7, rt.limits(7), clock.now)
    assert again.reaped == 1 and [(r.customer_id, r.backfill) for r in again.reads] == [(100, True)]
    assert rt.store.zcard(k.pending) == 0


def test_a_backfill_wake_up_pump_leaves_the_scheduled_pump_alone(monkeypatch):
    """Issue 18 goal 4: a wake-up per backfill read must not free the store's pump flag, or every
    backfill read would schedule one more pump in the reads queue, ahead of event-driven reads."""
    from service.config.celery_config import BACKFILL_QUEUE
    from workers import tasks

    rt = runtime()
    published = []
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    monkeypatch.setattr(tasks.pump_store, "apply_async", lambda args, **options: published.append((args, options)))
    tasks.pump_soon(7)
    assert published == [([7, True], {"queue": BACKFILL_QUEUE})]
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


def test_two_last_reads_ending_together_are_both_counted(monkeypatch):
    """Issue 18 goal 4 (test_install_storm saw 89 of 90 once in a fresh-clone run): the run's
    last two reads end together; B leaves `reading`, then A's read ends the run (which deletes
    `seen`) before B asks whether it was the run's; B must still count as read, not as a resync's."""
    rt = runtime()
    start(rt, 7)
    k = rt.keys.store(7)
    rt.store.sadd(k.backfill_seen, "100", "101")
    rt.store.sadd(k.backfill_reading, "100", "101")
    rt.store.hset(k.backfill, "listing_done", 1)
    real_pipeline = rt.store.pipeline

    def pipeline(*args, **kwargs):  # B's first pipeline: then A's read_done runs, as on another worker
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute

        def then_a():
            result = execute()
            if not then_a.ran and not rt.store.sismember(k.backfill_reading, "101"):
                then_a.ran = True
                monkeypatch.setattr(rt.store, "pipeline", real_pipeline)
                backfill.read_done(rt, 7, 100, "read", 0)
            return result
        then_a.ran = False
        pipe.execute = then_a
        return pipe

    monkeypatch.setattr(rt.store, "pipeline", pipeline)
    backfill.read_done(rt, 7, 101, "read", 0)
    progress = backfill_runs.progress(rt.store, rt.keys, rt.settings, {}, 7)
    assert progress["state"] == "done" and progress["customers_read"] == 2
