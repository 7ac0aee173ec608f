"""The planner and the outcome accounting (pure). The engine's properties: test_engine_properties.py."""
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from service.domain.loyalty import Lot
from service.domain.outcomes import settle, snapshot
from service.domain.schedule import SETTLE_STAGE, plan
from service.domain.send_window import parse_quiet_hours

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


def test_lots_entering_a_stage_within_the_look_ahead_share_its_reminder():
    a, b = lot("a", NOON + timedelta(days=35)), lot("b", NOON + timedelta(days=35, hours=20))
    # Five days on, a enters the 30-day stage and b follows within a day: one message names both.
    p = plan([a, b], NOON + timedelta(days=5), STAGES, "Asia/Riyadh", None, reminded={})
    assert [[l.key for l in g.lots] for g in p.send_now] == [["a", "b"]]


def test_a_lot_entering_after_the_look_ahead_gets_its_own_reminder_when_it_enters():
    a, b = lot("a", NOON + timedelta(days=35)), lot("b", NOON + timedelta(days=37))
    first = plan([a, b], NOON + timedelta(days=5), STAGES, "Asia/Riyadh", None, reminded={})
    assert [[l.key for l in g.lots] for g in first.send_now] == [["a"]]
    # The next look is when b is about to enter the 30-day stage...
    assert (NOON + timedelta(days=7), 30) in first.wakeups
    # ...and then b has its own 30-day reminder (a, already named, is listed too): not hidden.
    later = plan([a, b], NOON + timedelta(days=7), STAGES, "Asia/Riyadh", None, reminded={"a": 30},
                 stage_sent={30: (NOON + timedelta(days=5)).timestamp()})
    assert [[l.key for l in g.lots] for g in later.send_now] == [["a", "b"]]


def test_no_two_reminders_of_a_stage_within_the_look_ahead():
    a, b = lot("a", NOON + timedelta(days=35)), lot("b", NOON + timedelta(days=37))
    sent_at = (NOON + timedelta(days=6, hours=12)).timestamp()  # a 30-day reminder went out 12 hours ago
    p = plan([a, b], NOON + timedelta(days=7), STAGES, "Asia/Riyadh", None, reminded={"a": 30},
             stage_sent={30: sent_at})
    assert p.send_now == []
    assert (NOON + timedelta(days=7, hours=12), 30) in p.wakeups  # when the pause ends


def test_the_look_ahead_is_a_setting():
    a, b = lot("a", NOON + timedelta(days=35)), lot("b", NOON + timedelta(days=35, hours=20))
    p = plan([a, b], NOON + timedelta(days=5), STAGES, "Asia/Riyadh", None, reminded={},
             lookahead=timedelta(hours=12))
    assert [[l.key for l in g.lots] for g in p.send_now] == [["a"]]


def test_a_stage_entered_in_quiet_hours_is_reminded_before_they_begin():
    entering_at_23 = lot("a", datetime(2026, 12, 2, 23, 0, tzinfo=RIYADH) + timedelta(days=7))
    p = plan([entering_at_23], NOON, STAGES, "Asia/Riyadh", QUIET, reminded={"a": 30})
    assert p.send_now == []
    assert (datetime(2026, 12, 2, 20, 45, tzinfo=RIYADH), 7) in p.wakeups
    at = plan([entering_at_23], datetime(2026, 12, 2, 20, 45, tzinfo=RIYADH), STAGES, "Asia/Riyadh", QUIET,
              reminded={"a": 30})
    assert [g.stage_days for g in at.send_now] == [7]


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
