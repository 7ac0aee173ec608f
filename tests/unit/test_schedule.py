"""The planner and the outcome accounting (pure), and the engine's properties on fakeredis."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import requests
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from service.expiry import due_groups
from service.loyalty import Lot
from service.outcomes import settle, snapshot
from service.schedule import SETTLE_STAGE, eligible, plan
from service.send_window import in_quiet_hours, parse_quiet_hours
from tests.conftest import make_settings
from workers import reminding
from workers.delivery import deliver
from workers.runtime import build_runtime

RIYADH = ZoneInfo("Asia/Riyadh")
QUIET = parse_quiet_hours("21:00-09:00")
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=RIYADH)  # outside quiet hours
NIGHT = datetime(2026, 11, 25, 22, 0, tzinfo=RIYADH)  # inside
STAGES = (30, 7, 1)


def lot(key, expires_at, points=100, used=0, status="مؤكدة"):
    return Lot(key=key, name="", points=points, used_points=used, status=status,
               created_at=expires_at - timedelta(days=365), expires_at=expires_at, order_id=None, reference_id=None)


def test_due_outside_quiet_hours_is_sent_now_and_wakeups_follow():
    lots = [lot("a", NOON + timedelta(days=3)), lot("b", NOON + timedelta(days=40))]
    p = plan(lots, NOON, STAGES, "Asia/Riyadh", QUIET, reminded={})
    assert [(g.stage_days, [l.key for l in g.lots]) for g in p.send_now] == [(7, ["a"])]
    assert p.hold == []
    assert (NOON + timedelta(days=2), 1) in p.wakeups  # a enters the 1-day stage
    assert (NOON + timedelta(days=10), 30) in p.wakeups  # b enters the 30-day stage


def test_quiet_hours_hold_until_the_window_opens():
    lots = [lot("a", NIGHT + timedelta(days=3))]
    p = plan(lots, NIGHT, STAGES, "Asia/Riyadh", QUIET, reminded={})
    [(when, group)] = p.hold
    assert when == datetime(2026, 11, 26, 9, 0, tzinfo=RIYADH) and group.stage_days == 7
    assert p.send_now == []


def test_lots_expiring_before_the_window_opens_go_out_just_before():
    lots = [lot("a", NIGHT + timedelta(hours=4))]  # 02:00, before 09:00
    [(when, _)] = plan(lots, NIGHT, STAGES, "Asia/Riyadh", QUIET, reminded={}).hold
    assert when == NIGHT + timedelta(hours=3, minutes=30)


def test_quiet_hours_off():
    assert len(plan([lot("a", NIGHT + timedelta(days=3))], NIGHT, STAGES, "Asia/Riyadh", None, {}).send_now) == 1


def test_a_lot_first_seen_inside_the_7_day_stage_never_gets_the_30_day_one():
    lots = [lot("a", NOON + timedelta(days=5))]
    first = plan(lots, NOON, STAGES, "Asia/Riyadh", QUIET, reminded={})
    assert [g.stage_days for g in first.send_now] == [7]
    later = plan(lots, NOON + timedelta(days=1), STAGES, "Asia/Riyadh", QUIET, reminded={"a": 7})
    assert later.send_now == [] and all(stage != 30 for _, stage in later.wakeups)


def test_lots_on_different_days_make_one_message_per_stage():
    lots = [lot(k, NOON + timedelta(days=d)) for k, d in (("a", 2), ("b", 4), ("c", 6), ("d", 20), ("e", 25))]
    p = plan(lots, NOON, STAGES, "Asia/Riyadh", QUIET, reminded={})
    assert [(g.stage_days, len(g.lots)) for g in p.send_now] == [(7, 3), (30, 2)]


def test_minimum_points_and_excluded_statuses():
    lots = [lot("a", NOON + timedelta(days=3), points=5), lot("b", NOON + timedelta(days=3), status="ملغاة")]
    assert plan(lots, NOON, STAGES, "Asia/Riyadh", None, {}, min_points=10, excluded_statuses=["ملغاة"]).send_now == []
    assert len(plan(lots, NOON, STAGES, "Asia/Riyadh", None, {}, min_points=10).send_now) == 1
    p = plan(lots, NOON, STAGES, "Asia/Riyadh", None, {}, excluded_statuses=["ملغاة"])
    assert [l.key for l in p.send_now[0].lots] == ["a"]


def test_at_most_one_reminder_per_stage_per_stage_length():
    a, b = lot("a", NOON + timedelta(days=35)), lot("b", NOON + timedelta(days=37))
    first = plan([a, b], NOON + timedelta(days=5), STAGES, "Asia/Riyadh", None, reminded={})
    assert [[l.key for l in g.lots] for g in first.send_now] == [["a"]]
    sent_at = (NOON + timedelta(days=5)).timestamp()
    # b enters the 30-day stage two days later: no second 30-day message so soon...
    later = plan([a, b], NOON + timedelta(days=7), STAGES, "Asia/Riyadh", None, reminded={"a": 30},
                 stage_sent={30: sent_at})
    assert later.send_now == []
    # ...and a wake-up for when the pause ends (by then b is in the 7-day stage anyway).
    assert (NOON + timedelta(days=35), 30) in later.wakeups


def test_reminded_lots_get_a_settle_wakeup_after_expiry():
    lots = [lot("a", NOON + timedelta(days=3))]
    p = plan(lots, NOON, STAGES, "Asia/Riyadh", None, reminded={"a": 7})
    assert (NOON + timedelta(days=3, hours=1), SETTLE_STAGE) in p.wakeups


def test_points_saved_and_lost_across_a_sequence_of_reads():
    t0 = NOON
    expires = t0 + timedelta(days=3)
    read1 = [lot("a", expires, 500), lot("b", expires, 300), lot("c", expires, 50)]
    reminded = {"a": 7, "b": 7}  # c was never reminded
    read2 = [lot("a", expires, 500, used=200), lot("b", expires, 300), lot("c", expires, 50, used=50)]
    out = settle(snapshot(read1, t0), read2, reminded, t0 + timedelta(days=1))
    assert out.saved == {7: 200} and out.lost == {}
    read3 = [lot("a", expires, 500, used=500), lot("b", expires, 300), lot("c", expires, 50, used=50)]
    out = settle(snapshot(read2, t0 + timedelta(days=1)), read3, {"a": 1, "b": 7}, expires + timedelta(hours=1))
    assert out.saved == {1: 300} and out.lost == {7: 300}
    # After expiry nothing is open any more: a later read settles nothing twice.
    assert snapshot(read3, expires + timedelta(hours=1)) == {}


# -- the engine's properties -------------------------------------------------------------------
class Clock:
    def __init__(self, start):
        self.now = start.timestamp()

    def __call__(self):
        return self.now


class Channel:
    name = "webhook"

    def __init__(self):
        self.sent = []

    def send(self, reminder):
        self.sent.append(reminder)


lot_specs = st.lists(st.tuples(st.integers(min_value=1, max_value=45 * 24),  # expires in hours
                               st.integers(min_value=1, max_value=500)),      # points
                     min_size=1, max_size=6)
steps = st.lists(st.tuples(st.sampled_from(["sync", "sweep", "use"]),
                           st.integers(min_value=0, max_value=36),             # hours to advance
                           st.integers(min_value=0, max_value=5)), min_size=1, max_size=25)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=lot_specs, ops=steps)
def test_each_reminder_goes_out_at_most_once_and_every_due_one_goes_out_when_the_window_opens(specs, ops):
    clock = Clock(NOON)
    rt = build_runtime(make_settings(QUIET_HOURS="21:00-09:00", SYNC_DEBOUNCE_SECONDS="0"),
                       fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=clock)
    channel = Channel()
    rt.channels = [channel]
    from service.events import Customer
    customer = Customer(7, "Sara", None, None, None)
    used = {}
    truth = lambda: [lot(f"l{i}", NOON + timedelta(hours=h), p, used.get(f"l{i}", 0)) for i, (h, p) in enumerate(specs)]

    def send(reminder, keep):
        deliver(reminder, rt.channels, rt.store, "lpr:", keep)

    def now():
        return datetime.fromtimestamp(clock(), timezone.utc)

    def read(m, c):
        reminding.after_read(rt, m, customer, truth(), now(), send)

    reminding.after_read(rt, 1, customer, truth(), now(), send)
    for op, hours, which in ops:
        clock.now += hours * 3600
        if op == "use" and specs:
            key = f"l{which % len(specs)}"
            used[key] = specs[which % len(specs)][1]
        elif op == "sync":
            read(1, 7)
        else:
            reminding.sweep(rt, now(), send, read)
        # At most once: no reminder id twice.
        ids = [r["reminder_id"] for r in channel.sent]
        assert len(ids) == len(set(ids))
        # Once its window opens, every due lot with points unused has had its stage's reminder,
        # provided the engine has seen the lot (a read or a wake-up since it became due).
        # (Or the customer had this stage's reminder less than a stage length ago: at most one
        # per stage per stage length; the rest wait for that pause to end.)
        if op != "use" and not in_quiet_hours(now(), "Asia/Riyadh", QUIET):
            marks = reminding.reminded_marks(rt, 1, 7)
            recent = reminding.stages_sent(rt, 1, 7)
            for group in due_groups(eligible(truth(), now()), now(), STAGES):
                if clock() - recent.get(group.stage_days, -1e18) < group.stage_days * 86400:
                    continue
                for l in group.lots:
                    assert marks.get(l.key, 10**6) <= group.stage_days, (op, l.key, group.stage_days, marks)
    # A stage's reminder lists every lot in the stage, but goes out only for lots new to it:
    # each reminder brings at least one lot not reminded at that stage (or a nearer) before.
    reminded_at: dict[str, int] = {}
    for r in channel.sent:
        fresh = [l["key"] for l in r["lots"] if reminded_at.get(l["key"], 10**6) > r["stage_days"]]
        assert fresh, ("a reminder with nothing new", r["stage_days"], [l["key"] for l in r["lots"]])
        for l in r["lots"]:
            reminded_at[l["key"]] = min(reminded_at.get(l["key"], 10**6), r["stage_days"])
