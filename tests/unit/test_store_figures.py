"""Issue 17 §2: the page reads aggregates kept as reminders happen (counters per store per
week/month per stage), incremented where sends and outcomes are recorded, not a scan."""
from datetime import datetime, timezone

import fakeredis
import requests

from service.state import store_figures
from service.state.keys import Keys, lifetime
from tests.conftest import make_settings
from tests.unit.test_channels_and_delivery import REMINDER, RID, Clock, Recorder, queue
from workers.delivery import deliver
from service.ops.runtime import build_runtime

KEYS = Keys("lpr:")
NOW = 1_800_000_000.0  # 2027-01-15, a Friday in Riyadh


def runtime():
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=Clock())
    rt.channels = [Recorder("log"), Recorder("webhook")]
    return rt


def test_a_send_is_counted_once_in_its_week_month_and_reach_where_the_ledger_counts_it():
    """Issue 17 §2: counters incremented where sends are recorded (Ledger.mark_sent), once."""
    rt = runtime()
    queue(rt)
    for _ in range(3):
        deliver(rt, 1, 2, RID, rt.clock())
    figures = store_figures.read(rt.store, rt.keys, 1, rt.clock())
    assert figures["month"] == {"label": "2027-01", "sent": 1, "points_reminded": 400, "points_saved": 0, "reached": 1}
    assert figures["weeks"][-1]["stages"] == {7: {"sent": 1, "points_reminded": 400}}
    assert figures["recent"] == [RID]
    for key in rt.store.scan_iter(match="lpr:{store:1}:*"):
        found = lifetime("lpr:", key)
        if key.split("}:", 1)[1].split(":")[0] in ("week", "month", "reached", "recent"):
            assert found is not None and found.expires and rt.store.ttl(key) > 0, key


def test_points_saved_are_counted_per_week_and_stage_and_reach_counts_each_shopper_once():
    store = fakeredis.FakeRedis(decode_responses=True)
    for customer in (1, 2, 2, 3):
        store_figures.record_sent(store, KEYS, 9, customer, [(30, 50)], f"{customer:032x}", NOW)
    store_figures.record_saved(store, KEYS, 9, 30, 120, NOW)
    store_figures.record_saved(store, KEYS, 9, 1, 0, NOW)  # nothing saved: nothing written
    store_figures.record_saved(store, KEYS, 9, 30, 80, NOW - 7 * 86400)
    figures = store_figures.read(store, KEYS, 9, NOW)
    assert figures["month"]["sent"] == 4 and figures["month"]["reached"] == 3
    assert figures["month"]["points_saved"] == 200  # both weeks are in January
    assert [w["stages"].get(30, {}).get("points_saved", 0) for w in figures["weeks"]][-2:] == [80, 120]
    assert len(figures["weeks"]) == store_figures.WEEKS_SHOWN and figures["weeks"][-1]["week"] == "2027-W02"
    assert store_figures.read(store, KEYS, 10, NOW)["month"]["sent"] == 0  # another store sees none of it


def test_weeks_and_months_are_riyadh_time():
    # 22:30 UTC on Sunday 2027-01-31 is already Monday 1 February in Riyadh.
    at = datetime(2027, 1, 31, 22, 30, tzinfo=timezone.utc).timestamp()
    assert store_figures.month_label(at) == "2027-02" and store_figures.week_label(at) == "2027-W05"


def test_the_recent_list_is_capped():
    store = fakeredis.FakeRedis(decode_responses=True)
    for n in range(store_figures.RECENT_KEPT + 5):
        store_figures.record_sent(store, KEYS, 9, n, [(7, 1)], f"{n:032x}", NOW)
    recent = store_figures.read(store, KEYS, 9, NOW)["recent"]
    assert len(recent) == store_figures.RECENT_KEPT and recent[0] == f"{store_figures.RECENT_KEPT + 4:032x}"


def test_points_used_after_a_reminder_are_counted_where_the_read_settles_them():
    """Issue 17 §2: points saved are incremented where outcomes are recorded (reminding.after_read)."""
    from datetime import timedelta

    from service.domain.events import Customer
    from service.domain.loyalty import Lot
    from workers import reminding

    rt = build_runtime(make_settings(QUIET_HOURS="off"), fakeredis.FakeRedis(decode_responses=True), requests.Session())
    now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)

    def lot(used):
        return Lot(key="k3", name="", points=100, used_points=used, status="مؤكدة", created_at=now - timedelta(days=300),
                   expires_at=now + timedelta(days=3), order_id="1", reference_id=None)

    customer = Customer(5, "سارة", "+966500000001", "s@x.sa", None)
    rt.store.hset(rt.keys.store(1).marks(5), "k3", 7)  # a sent reminder named the lot at the 7-day stage
    reminding.after_read(rt, 1, customer, [lot(0)], now, lambda *a: None)
    reminding.after_read(rt, 1, customer, [lot(60)], now + timedelta(hours=1), lambda *a: None)
    figures = store_figures.read(rt.store, rt.keys, 1, (now + timedelta(hours=1)).timestamp())
    assert figures["month"]["points_saved"] == 60
    assert figures["weeks"][-1]["stages"][7]["points_saved"] == 60


def test_a_message_carrying_several_stages_counts_once_in_the_month_and_in_each_stage():
    """Stages due together go out as one message (`other_stages`): each stage counts it, the month once."""
    parts = store_figures.message_parts(7, {"points_expiring": 40, "other_stages": [
        {"stage_days": 1, "points_expiring": 60}, {"stage_days": "x"}]})
    assert parts == [(7, 40), (1, 60)]
    store = fakeredis.FakeRedis(decode_responses=True)
    store_figures.record_sent(store, KEYS, 9, 1, parts, "a" * 32, NOW)
    figures = store_figures.read(store, KEYS, 9, NOW)
    assert figures["month"]["sent"] == 1 and figures["month"]["points_reminded"] == 100
    assert figures["weeks"][-1]["stages"] == {7: {"sent": 1, "points_reminded": 40}, 1: {"sent": 1, "points_reminded": 60}}
