"""workers.sync over fakeredis and `responses`; retries, tokens and budget; pinned task options."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import pytest
import requests
import responses

from service.config.celery_config import HANDLE_EVENT_TASK, SYNC_TASK, VISIBILITY_TIMEOUT_SECONDS, celery_config
from service.domain.reminders import reminder_id
from service.state.stores import NEEDS_REAUTH
from service.state.tokens import StoreTokens
from tests.conftest import make_settings, sample
from workers import sync
from workers.backoff import MAX_BACKOFF_SECONDS, MAX_TASK_COUNTDOWN_SECONDS, retry_countdown
from service.ops.runtime import build_runtime

RIYADH = ZoneInfo("Asia/Riyadh")
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
URL = "https://api.salla.dev/admin/v2/customers/loyalty/points"
TOKEN_URL = "https://accounts.salla.sa/oauth2/token"
M, C = 1305146709, 225167971
CUSTOMER = {"id": C, "name": "Mohammed Ali", "mobile": "+966501806978", "email": "m@example.com",
            "notifications_enabled": None}


class Clock:
    def __init__(self):
        self.now = T0.timestamp()

    def __call__(self):
        return self.now


def row(expires_in: timedelta, points=100, used=0, order_id=1):
    local = (T0 + expires_in).astimezone(RIYADH)
    return {"name": "مخصصة", "points": points, "used_points": used, "status": "مؤكدة",
            "created_at": {"date": "2026-01-01 10:00:00.000000", "timezone_type": 3, "timezone": "Asia/Riyadh"},
            "expiry_date": local.strftime("%Y-%m-%d %H:%M:%S"), "order_id": order_id, "used_at": {}, "reference_id": None}


def answer(rows, page=1, total_pages=1):
    return {"status": 200, "success": True, "data": rows,
            "pagination": {"count": len(rows), "total": len(rows), "perPage": 60, "currentPage": page,
                           "totalPages": total_pages, "links": {}}}


class Recorder:
    """Stands in for the tasks' follow-ups: reads to publish, pumps to schedule, deliveries."""

    def __init__(self, rt=None):
        self.rt = rt
        self.syncs, self.leases, self.pumps, self.published = [], {}, [], []

    def send_sync(self, m, c, pages, lease=None):
        self.syncs.append((m, c, pages))
        self.leases[(m, c)] = lease

    def schedule_pump(self, m, wait):
        self.pumps.append((m, wait))

    def send_reminder(self, m, c, rid):
        self.published.append((m, c, rid))

    def read(self, m, c, pages):
        return sync.sync_customer(self.rt, m, c, pages, self.send_reminder, lease=self.leases.get((m, c)))

    @property
    def reminders(self):
        return [self.rt.ledger.get(m, rid).reminder for m, c, rid in self.published]


@pytest.fixture
def clock():
    return Clock()


def runtime_for(clock, **env):
    settings = make_settings(**{"SYNC_DEBOUNCE_SECONDS": "0", **env})
    return build_runtime(settings, fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=clock)


@pytest.fixture
def rt(clock):
    return runtime_for(clock)  # single-store mode: SALLA_ACCESS_TOKEN is set


@pytest.fixture
def multi(clock):
    rt = runtime_for(clock, SALLA_ACCESS_TOKEN="", SALLA_CLIENT_ID="cid", SALLA_CLIENT_SECRET="csecret")
    rt.tokens.save(M, StoreTokens("access-1", "refresh-1", clock() + 14 * 86400, "customers.read offline_access"))
    return rt


def event(customer=None):
    return {"event": "order.created", "merchant_id": M, "customer": customer or CUSTOMER}


def run_once(rt, rec=None):
    """An event, the pump, and the read it dispatches."""
    rec = rec or Recorder(rt)
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    results = [rec.read(m, c, pages) for m, c, pages in rec.syncs]
    rec.syncs.clear()
    return rec, results


# -- the path ------------------------------------------------------------------------------
@responses.activate
def test_points_expiring_in_3_days_give_one_7_day_reminder(rt):
    responses.get(URL, json=answer([row(timedelta(days=3), 500, 100), row(timedelta(days=3, hours=2), 50, order_id=2),
                                    row(timedelta(days=90)), row(timedelta(days=2), 100, 100), row(-timedelta(days=1))]))
    rec, [result] = run_once(rt)
    [reminder] = rec.reminders
    assert result.outcome == "read" and len(result.lots) == 5
    assert reminder["stage_days"] == 7 and reminder["points_expiring"] == 450
    assert reminder["earliest_expiry"] == (T0 + timedelta(days=3)).astimezone(RIYADH).isoformat()
    assert reminder["customer"] == {"name": "Mohammed Ali", "mobile": "+966501806978", "email": "m@example.com"}
    assert [lot["remaining_points"] for lot in reminder["lots"]] == [400, 50]
    assert responses.calls[0].request.headers["Authorization"] == "Bearer sandbox-token"


@responses.activate
def test_nothing_expiring_gives_no_reminder(rt):
    responses.get(URL, json=answer([row(timedelta(days=120)), row(-timedelta(days=3))]))
    rec, [result] = run_once(rt)
    assert result.outcome == "read" and rec.reminders == []


@responses.activate
def test_unreadable_rows_are_skipped_and_logged(rt, caplog):
    responses.get(URL, json=answer([row(timedelta(days=3)), {"points": "x"}]))
    rec, _ = run_once(rt)
    assert len(rec.reminders) == 1 and "unreadable loyalty row" in caplog.text


# -- coalescing ----------------------------------------------------------------------------
def test_fifty_events_are_one_read_and_counted(rt):
    rec = Recorder(rt)
    outcomes = [sync.accept_event(rt, event()) for _ in range(50)]
    assert outcomes.count("queued") == 1 and outcomes.count("coalesced") == 49
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [(M, C, 1)]
    assert rt.registry.counters(M)["events_coalesced"] == 49


def test_a_burst_waits_out_the_debounce_and_costs_one_read(clock):
    rt = runtime_for(clock, SYNC_DEBOUNCE_SECONDS="3")
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [] and rec.pumps[-1][1] == pytest.approx(3)
    clock.now += 2
    sync.accept_event(rt, event())  # still inside the window: same read, not postponed
    clock.now += 1
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [(M, C, 1)]


# -- Salla's errors ------------------------------------------------------------------------
@responses.activate
def test_429_blocks_the_store_and_requeues_the_customer(rt, clock):
    responses.get(URL, status=429, headers={"Retry-After": "40"})
    rec, [result] = run_once(rt)
    assert result.outcome == "requeued"
    assert rt.registry.counters(M)["salla_429"] == 1
    assert sync.pump(rt, M, rec.send_sync, rec.schedule_pump) == 0
    assert rec.pumps[-1][1] == pytest.approx(40, abs=1)
    clock.now += 41
    assert sync.pump(rt, M, rec.send_sync, rec.schedule_pump) == 1


@responses.activate
def test_5xx_and_timeouts_are_retried_with_backoff_then_given_up(clock):
    rt = runtime_for(clock, SYNC_MAX_ATTEMPTS="3")
    responses.get(URL, status=503)
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    outcomes = []
    for _ in range(3):
        sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
        assert len(rec.syncs) == 1, "one read per attempt"
        outcomes.append(rec.read(*rec.syncs.pop()).outcome)
        clock.now += MAX_BACKOFF_SECONDS
    assert outcomes == ["requeued", "requeued", "failed"]
    assert rt.registry.counters(M)["syncs_failed"] == 1
    responses.replace(responses.GET, URL, body=requests.Timeout("slow"))
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.read(*rec.syncs.pop()).outcome == "requeued"


@responses.activate
def test_a_transient_failure_then_success(rt, clock):
    responses.get(URL, status=500)
    responses.get(URL, json=answer([row(timedelta(days=3))]))
    rec, [first] = run_once(rt)
    clock.now += 10
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    second = rec.read(*rec.syncs.pop())
    assert (first.outcome, second.outcome) == ("requeued", "read") and len(rec.reminders) == 1


@responses.activate
def test_other_4xx_are_permanent_and_recorded_with_store_and_customer(rt, caplog):
    rt.store.set(rt.keys.store(M).loyalty_ok, "1")
    responses.get(URL, status=422, json={"status": 422, "success": False, "error": {"code": "error", "message": "bad"}})
    _, [result] = run_once(rt)
    assert result.outcome == "failed"
    assert f"merchant={M} customer={C}" in caplog.text
    assert rt.registry.counters(M)["sync_errors"] == 1


@pytest.mark.parametrize("status, loyalty_ok, missing", [(403, False, True), (404, False, True), (404, True, False)])
@responses.activate
def test_a_store_without_the_loyalty_app_is_remembered(rt, status, loyalty_ok, missing):
    if loyalty_ok:
        rt.store.set(rt.keys.store(M).loyalty_ok, "1")
    responses.get(URL, status=status, json={"status": status, "success": False, "error": {"code": status, "message": "x"}})
    run_once(rt)
    assert rt.registry.loyalty_missing(M) is missing
    if missing:
        assert sync.accept_event(rt, event()) == "no_loyalty_app"
        assert len(responses.calls) == 1  # not polled again


ERRORS = sample("errors.json")  # Salla's documented error envelopes (tests/fixtures/salla/SOURCES.md)


@pytest.mark.parametrize("body, loyalty_ok", [(ERRORS["403_blocked"], False), (ERRORS["403_blocked"], True),
                                              (ERRORS["403_not_allowed"], True)])
@responses.activate
def test_a_403_that_is_a_temporary_block_holds_the_store_and_drops_nothing(rt, clock, body, loyalty_ok):
    """Issue 15 item 21: Salla documents 403 as "refusing it (blocked due to many errors in
    particular time) or the access is not allowed". A block (said so, or a store read before)
    is a short hold: no read of the store is dropped, and they all go out after the hold."""
    if loyalty_ok:
        rt.store.set(rt.keys.store(M).loyalty_ok, "1")
    responses.get(URL, status=403, json=body)
    responses.get(URL, json=answer([row(timedelta(days=3))]))
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    sync.accept_event(rt, event(dict(CUSTOMER, id=C + 1)))  # a second customer of the store, queued
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    results = [rec.read(*rec.syncs.pop(0)) for _ in range(len(rec.syncs))]
    assert results[0].outcome == "requeued"
    assert not rt.registry.loyalty_missing(M) and rt.registry.counters(M)["salla_403_held"] == 1
    assert sync.accept_event(rt, event(dict(CUSTOMER, id=C + 2))) == "queued"  # events still count
    assert sync.pump(rt, M, rec.send_sync, rec.schedule_pump) == 0  # the store waits out the hold
    assert rec.pumps[-1][1] == pytest.approx(sync.FORBIDDEN_HOLD_SECONDS, abs=1)
    clock.now += sync.FORBIDDEN_HOLD_SECONDS + 1
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert sorted(c for _, c, _ in rec.syncs) == [C, C + 1, C + 2]  # nothing was dropped
    assert {rec.read(*read).outcome for read in rec.syncs} == {"read"}


@responses.activate
def test_a_403_from_a_store_never_read_is_a_missing_loyalty_app(rt):
    """Issue 15 item 21: the other shape. "The access is not allowed" from a store whose loyalty
    endpoint never answered means the Customer Loyalty app is missing: left alone a while."""
    responses.get(URL, status=403, json=ERRORS["403_not_allowed"])
    _, [result] = run_once(rt)
    assert result.outcome == "failed" and rt.registry.loyalty_missing(M)
    assert rt.registry.counters(M)["loyalty_app_missing"] == 1


@responses.activate
def test_budget_running_out_mid_history_requeues_with_the_page_count(clock):
    rt = runtime_for(clock, SALLA_CUSTOMER_LIMIT="3")
    rt.budget.acquire(M, rt.limits(M), clock(), 2)  # another read took 2 of the 3 slots
    responses.get(URL, json=answer([row(timedelta(days=3))], 1, 2))
    rec, [result] = run_once(rt)
    assert result.outcome == "requeued"  # page 2 had no slot left
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == []  # it now needs 2 slots: not dispatched short
    clock.now += 601
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [(M, C, 2)]


@responses.activate
def test_a_history_longer_than_a_window_fails_loudly_instead_of_looping(clock, caplog):
    rt = runtime_for(clock, SALLA_CUSTOMER_LIMIT="1")
    responses.get(URL, json=answer([row(timedelta(days=3))], 1, 2))
    rec, [result] = run_once(rt)
    # 2 pages, a window of 1: never readable whole.
    assert result.outcome == "failed" and "more pages than one budget window" in caplog.text


@responses.activate
def test_a_read_dispatched_before_a_429_block_does_not_go_out(rt, clock):
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    rt.budget.observe(M, {"Retry-After": "30"}, clock())  # another read got a 429 meanwhile
    result = rec.read(*rec.syncs.pop())
    assert result.outcome == "requeued" and len(responses.calls) == 0
    clock.now += 31
    responses.get(URL, json=answer([]))
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.read(*rec.syncs.pop()).outcome == "read"


@responses.activate
def test_a_read_held_up_past_its_window_goes_only_if_the_window_has_room(clock):
    """Budget.stamp on the read path: a read dispatched, then held up longer than Salla's window
    (a worker restarting) while other reads filled the window, does not go (it would be one
    request too many at Salla: 429); it waits in line and goes when there is room."""
    rt = runtime_for(clock, SALLA_PLAN_LIMIT="5", SALLA_PLAN_WINDOW_SECONDS="2")
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    held_up = rec.syncs.pop()
    clock.now += 5  # its slot left the 2 s window (2.2 with the margin); its lease (30 s) holds
    assert rt.budget.acquire(M, rt.limits(M), clock(), 5, tag="others")  # the window filled meanwhile
    assert rec.read(*held_up).outcome == "requeued" and len(responses.calls) == 0
    clock.now += 3
    responses.get(URL, json=answer([]))
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.read(*rec.syncs.pop()).outcome == "read" and len(responses.calls) == 1


def test_a_failed_publish_puts_the_customer_back(rt, clock):
    def broken(*args):
        raise ConnectionError("broker down")
    sync.accept_event(rt, event())
    with pytest.raises(ConnectionError):
        sync.pump(rt, M, broken, lambda *a: None)
    clock.now += 6
    rec = Recorder(rt)
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [(M, C, 1)]


def test_a_failed_publish_puts_back_every_read_not_handed_out(rt, clock):
    for customer in (1, 2, 3):
        sync.accept_event(rt, event(dict(CUSTOMER, id=customer)))
    published = []

    def flaky(m, c, pages, lease):
        if published:
            raise ConnectionError("broker down")
        published.append(c)
    with pytest.raises(ConnectionError):
        sync.pump(rt, M, flaky, lambda *a: None)
    assert published == [1]
    clock.now += 6
    rec = Recorder(rt)
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [(M, 2, 1), (M, 3, 1)]  # none of them left marked in flight


@responses.activate
def test_an_unexpected_error_in_a_read_puts_the_customer_back(rt, clock, monkeypatch, caplog):
    responses.get(URL, json=answer([row(timedelta(days=3))]))

    def broken(rows, zone):
        raise KeyError("a shape nobody foresaw")
    monkeypatch.setattr(sync, "parse_history", broken)
    rec, [result] = run_once(rt)
    assert result.outcome == "requeued" and "failed unexpectedly" in caplog.text
    monkeypatch.undo()
    clock.now += MAX_BACKOFF_SECONDS
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    assert rec.syncs == [(M, C, 1)]  # back in line, not blocked by an in-flight mark
    assert rec.read(*rec.syncs.pop()).outcome == "read" and len(rec.reminders) == 1


@responses.activate
def test_a_read_whose_worker_died_comes_back_and_its_stale_copy_steps_aside(rt, clock):
    from service.state.budget import Budget
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    dead_copy = (rec.syncs.pop(), rec.leases[(M, C)])  # handed out; its worker is killed
    clock.now += 30
    assert sync.pump(rt, M, rec.send_sync, rec.schedule_pump) == 0  # still in flight
    clock.now += Budget.LEASE_BASE_SECONDS + Budget.LEASE_PER_PAGE_SECONDS
    assert sync.pump(rt, M, rec.send_sync, rec.schedule_pump) == 1
    assert rt.registry.counters(M)["reads_recovered"] == 1
    responses.get(URL, json=answer([row(timedelta(days=3))]))
    assert rec.read(*rec.syncs.pop()).outcome == "read"
    # The broker redelivers the dead worker's message much later: it must not read again.
    (m, c, pages), lease = dead_copy
    assert sync.sync_customer(rt, m, c, pages, rec.send_reminder, lease=lease).outcome == "stale"
    assert len(responses.calls) == 1 and len(rec.reminders) == 1


def test_opt_out_counts_even_while_the_store_needs_reauthorization(rt):
    from workers import reminding
    from service.state.due_set import DueEntry
    rt.registry.set_state(M, NEEDS_REAUTH, "x")
    rt.due.schedule([(1e10, DueEntry(M, C, 7, "0" * 12))])
    assert sync.accept_event(rt, event(dict(CUSTOMER, notifications_enabled=False))) == "dropped"
    assert rt.due.pending_count() == 0
    assert rt.profiles.load(M, C).notifications_enabled is False


# -- tokens --------------------------------------------------------------------------------
@responses.activate
def test_per_store_token_is_used(multi):
    responses.get(URL, json=answer([]))
    run_once(multi)
    assert responses.calls[0].request.headers["Authorization"] == "Bearer access-1"


@responses.activate
def test_token_is_refreshed_ahead_of_expiry(multi, clock):
    clock.now += 14 * 86400 - 3600  # an hour left
    responses.post(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 1209600,
                                    "scope": "customers.read offline_access", "token_type": "bearer"})
    responses.get(URL, json=answer([]))
    run_once(multi)
    assert responses.calls[0].request.body == ("grant_type=refresh_token&refresh_token=refresh-1"
                                               "&client_id=cid&client_secret=csecret")
    assert responses.calls[1].request.headers["Authorization"] == "Bearer access-2"
    stored = multi.tokens.load(M)
    assert (stored.access_token, stored.refresh_token) == ("access-2", "refresh-2")
    assert stored.expires_at == pytest.approx(clock() + 1209600)


@responses.activate
def test_a_401_for_an_expired_token_refreshes_and_reads_again(multi):
    responses.get(URL, status=401, json={"status": 401, "success": False,
                                         "error": {"code": "Invalid-token", "message": "please provide a valid API Key"}})
    responses.post(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2",
                                    "expires": int(T0.timestamp()) + 1209600})
    responses.get(URL, json=answer([row(timedelta(days=3))]))
    rec, [result] = run_once(multi)
    assert result.outcome == "read" and len(rec.reminders) == 1
    assert [c.request.url.split("?")[0] for c in responses.calls] == [URL, TOKEN_URL, URL]
    assert multi.tokens.load(M).expires_at == T0.timestamp() + 1209600


@responses.activate
def test_a_missing_scope_is_permanent_and_visible(multi):
    responses.get(URL, status=401, json={"status": 401, "success": False, "error": {
        "code": "Unauthorized", "message": "The access token should have access to one of those scopes: customers.read"}})
    _, [result] = run_once(multi)
    assert result.outcome == "dropped"
    assert multi.registry.state(M)["state"] == NEEDS_REAUTH
    assert "scope" in multi.registry.state(M)["reason"]
    assert sync.accept_event(multi, event()) == "dropped"  # not retried in a loop
    assert len(responses.calls) == 1


@responses.activate
def test_invalid_grant_marks_the_store_for_reauthorization(multi):
    responses.get(URL, status=401, json={"status": 401, "success": False, "error": {"code": "Invalid-token", "message": "x"}})
    responses.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})
    _, [result] = run_once(multi)
    assert result.outcome == "dropped"
    assert multi.registry.state(M) | {"since": ""} == {"state": NEEDS_REAUTH, "reason": "token refresh refused: 400 invalid_grant", "since": ""}


EXPIRED = {"status": 401, "success": False, "error": {"code": "Invalid-token", "message": "x"}}


@pytest.mark.parametrize("status, error", [(401, "invalid_client"), (400, "invalid_request"),
                                           (400, "unsupported_grant_type")])
@responses.activate
def test_a_refusal_of_our_own_client_is_an_operator_alarm_not_the_stores(multi, clock, status, error):
    responses.get(URL, status=401, json=EXPIRED)
    responses.post(TOKEN_URL, status=status, json={"error": error})
    rec, [result] = run_once(multi)
    assert result.outcome == "requeued"
    assert multi.registry.state(M).get("state", "active") == "active"  # the store keeps its state
    [(name, alarm)] = multi.alarms.active().items()
    assert name == "oauth_client" and error in alarm["message"]
    assert multi.store.hget(multi.keys.store(M).attempts, C) is None  # no attempt spent: it waits
    # While the alarm holds, reads wait without calling Salla's token endpoint again.
    clock.now += 301
    sync.pump(multi, M, rec.send_sync, rec.schedule_pump)
    calls = len(responses.calls)
    clock.now += 1  # hold not over for the next one: queue it again and see it wait
    multi.alarms.raise_("oauth_client", "still wrong", hold_seconds=300, now=clock())
    assert rec.read(*rec.syncs.pop()).outcome == "requeued"
    assert [c.request.url for c in responses.calls[calls:]] == [responses.calls[0].request.url]  # the GET only
    # Fixed: the hold passes, the refresh succeeds, the alarm clears.
    responses.replace(responses.POST, TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2",
                                                       "expires_in": 1209600})
    responses.replace(responses.GET, URL, json=answer([]))
    clock.now += 301
    multi.tokens.save(M, StoreTokens("access-1", "refresh-1", clock() + 3600, "customers.read offline_access"))
    sync.pump(multi, M, rec.send_sync, rec.schedule_pump)
    assert rec.read(*rec.syncs.pop()).outcome == "read"
    assert multi.alarms.active() == {}


@pytest.mark.parametrize("status, body", [(400, {"error": "temporarily_unavailable"}), (503, {}), (429, {}),
                                          (403, "<html>blocked</html>")])
@responses.activate
def test_an_unknown_refresh_answer_is_retried_with_backoff(multi, status, body):
    responses.get(URL, status=401, json=EXPIRED)
    if isinstance(body, dict):
        responses.post(TOKEN_URL, status=status, json=body)
    else:
        responses.post(TOKEN_URL, status=status, body=body)
    _, [result] = run_once(multi)
    assert result.outcome == "requeued"
    assert multi.registry.state(M).get("state", "active") == "active" and multi.alarms.active() == {}
    assert multi.store.hget(multi.keys.store(M).attempts, C) == "1"


@responses.activate
def test_missing_client_credentials_are_an_alarm_too(clock):
    rt = runtime_for(clock, SALLA_ACCESS_TOKEN="")
    rt.tokens.save(M, StoreTokens("access-1", "refresh-1", clock() + 14 * 86400, "customers.read offline_access"))
    responses.get(URL, status=401, json=EXPIRED)
    _, [result] = run_once(rt)
    assert result.outcome == "requeued" and "SALLA_CLIENT_ID" in rt.alarms.active()["oauth_client"]["message"]
    assert rt.registry.state(M).get("state", "active") == "active"


def test_no_tokens_for_a_store_drops_the_read_and_counts_it(clock):
    rt = runtime_for(clock, SALLA_ACCESS_TOKEN="")
    _, [result] = run_once(rt)
    assert result.outcome == "dropped" and rt.registry.counters(M)["dropped_syncs"] == 1


def test_an_uninstalled_store_gets_no_work(multi):
    from service.state.stores import UNINSTALLED
    sync.accept_event(multi, event())
    multi.registry.set_state(M, UNINSTALLED)
    rec = Recorder(multi)
    assert sync.pump(multi, M, rec.send_sync, rec.schedule_pump) == 0
    assert sync.accept_event(multi, event()) == "dropped"
    assert sync.sync_customer(multi, M, C, 1, rec.send_reminder).outcome == "dropped"


# -- pure bits and pinned options ----------------------------------------------------------
def test_reminder_id_depends_on_stage_and_lot_set_not_order():
    assert reminder_id(1, 2, 7, ["a", "b"]) == reminder_id(1, 2, 7, ["b", "a"])
    assert reminder_id(1, 2, 7, ["a"]) != reminder_id(1, 2, 1, ["a"])
    assert reminder_id(1, 2, 7, ["a"]) != reminder_id(1, 2, 7, ["a", "b"])


def test_backoff_grows_with_jitter_and_honours_retry_after():
    assert 1 <= retry_countdown(0, rand=lambda: 0) <= 2
    assert retry_countdown(3, rand=lambda: 1) == 16
    assert retry_countdown(0, retry_after=30, rand=lambda: 0) == 30
    assert retry_countdown(50, rand=lambda: 1) == MAX_BACKOFF_SECONDS
    # What the broker holds (task countdowns) stays far under its visibility timeout.
    assert MAX_TASK_COUNTDOWN_SECONDS * 2 <= VISIBILITY_TIMEOUT_SECONDS


def test_celery_settings_are_pinned():
    # A typo such as ignore_results=True is silently accepted by Celery: pin what matters.
    conf = celery_config(make_settings())
    assert conf["task_serializer"] == "json" and conf["accept_content"] == ["json"]
    assert conf["task_acks_late"] is True and conf["task_reject_on_worker_lost"] is True
    assert conf["task_ignore_result"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT_SECONDS


def test_task_options_are_pinned(monkeypatch):
    from tests.conftest import TOKEN_KEY
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    from workers.celery import app
    app.loader.import_default_modules()
    for name in (HANDLE_EVENT_TASK, SYNC_TASK, "workers.tasks.deliver_reminder", "workers.tasks.pump_store"):
        task = app.tasks[name]
        assert task.acks_late is True and task.ignore_result is True, name
    import redis
    for name in (HANDLE_EVENT_TASK, SYNC_TASK, "workers.tasks.deliver_reminder"):
        assert redis.ConnectionError in app.tasks[name].autoretry_for, name
        assert app.tasks[name].retry_backoff_max <= MAX_TASK_COUNTDOWN_SECONDS, name


# -- the sweep keeps work it cannot do now ------------------------------------------------------
@pytest.mark.parametrize("state", ["needs_reauth", "paused", "no_loyalty"])
def test_the_sweep_keeps_entries_of_stores_it_cannot_serve_now(rt, clock, state):
    from workers import reminding
    from service.state.due_set import DueEntry
    if state == "needs_reauth":
        rt.registry.set_state(M, NEEDS_REAUTH, "x")
    elif state == "paused":
        rt.registry.set_config(M, paused=1)
    else:
        rt.registry.mark_loyalty_missing(M, 600)
    due = rt.due
    due.schedule([(clock() - 1, DueEntry(M, C, 7, "0" * 12))])
    reads = []
    result = reminding.sweep(rt, datetime.fromtimestamp(clock(), timezone.utc), lambda *a: None,
                             lambda m, c: reads.append(c))
    assert result.claimed == 1 and reads == []
    assert due.pending_count() == 1 and due.processing_count() == 0  # rescheduled, not lost


def test_a_customer_that_fails_in_the_sweep_does_not_stop_the_others(rt, clock, monkeypatch):
    from workers import reminding
    from service.state.due_set import DueEntry
    due = rt.due
    due.schedule([(clock() - 1, DueEntry(M, c, 7, "0" * 12)) for c in (1, 2, 3)])

    def read(m, c):
        if c == 2:
            raise RuntimeError("boom")
        reads.append(c)
    reads = []
    reminding.sweep(rt, datetime.fromtimestamp(clock(), timezone.utc), lambda *a: None, read)
    assert reads == [1, 3]
    assert due.processing_count() == 1  # customer 2 waits for its lease to run out


# -- the paths that used to lose a reminder -----------------------------------------------------
def test_an_order_event_handled_with_an_opt_out_never_writes_the_old_flag_back(rt):
    """customer.updated (opt-out) and order.created for one customer, handled at the same moment
    by two workers: the opt-out's whole write lands just before the order's write (after any read
    the order's save did). The opt-out must stand."""
    sync.accept_event(rt, event(dict(CUSTOMER, notifications_enabled=True)))
    real = rt.profiles.redis
    fired = []

    def opt_out_first():
        if not fired:
            fired.append(1)
            rt.profiles.redis = real
            rt.profiles.save(M, sync.Customer.from_dict(dict(CUSTOMER, notifications_enabled=False)))

    class Pipe:
        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, name):
            if name == "execute":
                opt_out_first()
            return getattr(self.pipe, name)

    class Store:
        def __getattr__(self, name):
            if name in ("set", "hset", "evalsha"):  # evalsha: the profile's ordered write (one script)
                opt_out_first()
            if name == "pipeline":
                return lambda *a, **k: Pipe(real.pipeline(*a, **k))
            return getattr(real, name)
    rt.profiles.redis = Store()
    rt.profiles.save(M, sync.Customer.from_dict(CUSTOMER))  # order.created: carries no flag
    rt.profiles.redis = real
    assert fired
    assert rt.profiles.load(M, C).notifications_enabled is False
    assert rt.profiles.load(M, C).name == "Mohammed Ali"


def test_a_held_reminder_whose_read_is_dropped_stays_in_the_due_set(rt, clock):
    from workers import reminding
    from service.state.due_set import DueEntry
    held = DueEntry(M, C, 7, "ab" * 6)
    rt.due.schedule([(clock() - 1, held)])
    asked = []
    result = reminding.sweep(rt, datetime.fromtimestamp(clock(), timezone.utc), lambda *a: None,
                             lambda m, c: asked.append(c))  # the read is then dropped: nothing comes back
    assert result.reads_requested == 1 and asked == [C]
    assert rt.due.pending_count() == 1 and rt.due.processing_count() == 0
    # It comes back and asks again, instead of being gone.
    clock.now += reminding.RECHECK_WAIT_SECONDS
    reminding.sweep(rt, datetime.fromtimestamp(clock(), timezone.utc), lambda *a: None, lambda m, c: asked.append(c))
    assert asked == [C, C]


@responses.activate
def test_a_read_whose_message_arrives_after_its_lease_ran_out_steps_aside(rt, clock):
    """The message waited in the queue past its lease (behind a worker's slow warm shutdown).
    Not yet reaped, the lease still matches; reading now would race the next dispatch, which
    reaps it and hands the customer out again: read twice (test_backfill saw it under load)."""
    from service.state.budget import Budget
    rec = Recorder(rt)
    sync.accept_event(rt, event())
    sync.pump(rt, M, rec.send_sync, rec.schedule_pump)
    late = (rec.syncs.pop(), rec.leases[(M, C)])
    clock.now += Budget.LEASE_BASE_SECONDS + Budget.LEASE_PER_PAGE_SECONDS + 1
    (m, c, pages), lease = late
    assert sync.sync_customer(rt, m, c, pages, rec.send_reminder, lease=lease).outcome == "stale"
    assert len(responses.calls) == 0
    # The next dispatch hands it out again, and that read is the one that happens.
    assert sync.pump(rt, M, rec.send_sync, rec.schedule_pump) == 1
    responses.get(URL, json=answer([row(timedelta(days=3))]))
    assert rec.read(*rec.syncs.pop()).outcome == "read" and len(responses.calls) == 1


def test_every_accepted_event_gets_one_info_line_whatever_becomes_of_it(rt, caplog):
    """The web logs an accepted webhook at DEBUG only: the drain's line is where an operator
    finds it by its correlation id, for a dropped or skipped event too."""
    from service.state.stores import UNINSTALLED

    def lines_for(customer_id):
        return [r for r in caplog.records if r.levelname == "INFO" and f"customer={customer_id}:" in r.getMessage()]

    caplog.set_level("INFO", logger="workers.sync")
    assert sync.accept_event(rt, event(dict(CUSTOMER, id=501))) == "queued"
    assert sync.accept_event(rt, event(dict(CUSTOMER, id=501))) == "coalesced"
    rt.registry.mark_loyalty_missing(M, 600)
    assert sync.accept_event(rt, event(dict(CUSTOMER, id=502))) == "no_loyalty_app"
    rt.registry.set_state(M, NEEDS_REAUTH, "test")
    assert sync.accept_event(rt, event(dict(CUSTOMER, id=503))) == "dropped"
    rt.registry.set_state(M, UNINSTALLED, "test")
    assert sync.accept_event(rt, event(dict(CUSTOMER, id=504))) == "dropped"
    assert [len(lines_for(c)) for c in (501, 502, 503, 504)] == [2, 1, 1, 1]
    assert "uninstalled" in lines_for(504)[0].getMessage() and "no loyalty app" in lines_for(502)[0].getMessage()
