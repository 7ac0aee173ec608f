"""The reminder engine's promises, checked by an oracle that knows the rules and not the code.

The engine runs as deployed (fakeredis for Redis): a customer's events cause reads, and the
sweep runs at every moment the due set names, as beat's frequent ticks do. Lots appear in
Salla's history over time and some are used. The oracle then checks what the shopper got:

1. every lot with points left that was known (read) at least REMINDER_LOOKAHEAD before it
   entered a stage is named in a reminder of that stage that went out no later than the
   moment it entered it, and no earlier than the look-ahead before;
2. no customer gets two reminders of one stage within REMINDER_LOOKAHEAD;
3. no reminder goes out twice, and no two messages go out at the same moment (stages due
   together share one).

A message may name several stages (those due at the same moment go out together,
`other_stages`): the oracle reads each stage of it as that stage's reminder.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import requests
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from service.domain.events import Customer
from service.domain.loyalty import Lot
from tests.conftest import make_settings
from workers import reminding
from workers.delivery import deliver
from service.ops.runtime import build_runtime

RIYADH = ZoneInfo("Asia/Riyadh")
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=RIYADH)
STAGES = (30, 7, 1)
LOOKAHEAD = timedelta(days=1)
HOUR = timedelta(hours=1)
M, C = 1, 7


@dataclass(frozen=True)
class TrueLot:
    key: str
    created: datetime
    expires: datetime
    points: int
    used_at: datetime | None

    def at(self, now: datetime) -> Lot:
        used = self.points if self.used_at is not None and self.used_at <= now else 0
        return Lot(key=self.key, name="", points=self.points, used_points=used, status="مؤكدة",
                   created_at=self.created, expires_at=self.expires, order_id=None, reference_id=None)


class Channel:
    name = "webhook"

    def __init__(self, clock):
        self.clock = clock
        self.sent: list[tuple[datetime, dict]] = []

    def send(self, reminder):
        self.sent.append((datetime.fromtimestamp(self.clock(), timezone.utc), reminder))


class Clock:
    def __init__(self, start: datetime):
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


class Simulation:
    def __init__(self, lots: list[TrueLot], quiet: str):
        self.clock = Clock(T0)
        settings = make_settings(QUIET_HOURS=quiet, SYNC_DEBOUNCE_SECONDS="0", REMINDER_LOOKAHEAD="1d",
                                 REMINDER_STAGES_DAYS="30,7,1")
        self.rt = build_runtime(settings, fakeredis.FakeRedis(decode_responses=True), requests.Session(),
                                clock=self.clock)
        self.channel = Channel(self.clock)
        self.rt.channels = [self.channel]
        self.lots = lots
        self.reads: list[datetime] = []
        self.customer = Customer(C, "Sara", "+966500000001", None, None)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def publish(self, m, c, rid):
        deliver(self.rt, m, c, rid, self.clock())

    def read(self, m=M, c=C):
        now = self.now()
        self.reads.append(now)
        truth = [lot.at(now) for lot in self.lots if lot.created <= now]
        reminding.after_read(self.rt, m, self.customer, truth, now, self.publish)

    def run_until(self, moment: datetime):
        """Sweep at every due moment up to `moment`, as beat's ticks would."""
        for _ in range(5000):
            due = self.rt.due.next_due()
            if due is None or due > moment.timestamp():
                break
            self.clock.now = max(self.clock.now, due)
            reminding.sweep(self.rt, self.now(), self.publish, self.read)
        else:
            raise AssertionError("the due set never settles")
        self.clock.now = max(self.clock.now, moment.timestamp())


lot_specs = st.lists(st.tuples(st.sampled_from([0, 0, 0, 24, 24 * 10, 24 * 25]) | st.integers(0, 40 * 24),  # created (h)
                               st.integers(1, 45 * 24),        # lifetime (h)
                               st.integers(1, 500),            # points
                               st.none() | st.integers(0, 60 * 24)),  # used at (h), or never
                     min_size=1, max_size=6)
event_times = st.lists(st.integers(0, 60 * 24), max_size=8)  # hours at which an order event arrives


def simulate(specs, events, quiet="21:00-09:00") -> Simulation:
    lots = [TrueLot(f"l{i}", T0 + created * HOUR, T0 + (created + life) * HOUR, points,
                    None if used is None else T0 + used * HOUR)
            for i, (created, life, points, used) in enumerate(specs)]
    sim = Simulation(lots, quiet)
    sim.read()  # the first event
    for hours in sorted(events):
        sim.run_until(T0 + hours * HOUR)
        sim.read()
    sim.run_until(T0 + timedelta(days=90))
    return sim


def stages_named(reminder: dict) -> list[dict]:
    """A message's stages, each as a reminder of its own (`stage_days`, `lots`)."""
    return [reminder, *reminder.get("other_stages", [])]


def check(sim: Simulation) -> None:
    messages = sim.channel.sent
    ids = [r["reminder_id"] for _, r in messages]
    assert len(ids) == len(set(ids)), "a reminder went out twice"
    sent = [(t, part) for t, r in messages for part in stages_named(r)]
    for _, r in messages:
        keys = [lot["key"] for part in stages_named(r) for lot in part["lots"]]
        assert len(keys) == len(set(keys)), f"one message names a lot twice: {sorted(keys)}"
    times = [t for t, _ in messages]
    assert len(times) == len(set(times)), "two messages to the shopper at the same moment"
    for stage in STAGES:
        times = sorted(t for t, r in sent if r["stage_days"] == stage)
        for earlier, later in zip(times, times[1:]):
            assert later - earlier >= LOOKAHEAD, f"two {stage}-day reminders {later - earlier} apart"
    for lot in sim.lots:
        known = next((t for t in sim.reads if t >= lot.created), None)
        for stage in STAGES:
            entry = lot.expires - timedelta(days=stage)
            if known is None or known > entry - LOOKAHEAD:
                continue  # not known in time to be named before it entered
            if lot.used_at is not None and lot.used_at <= entry:
                continue  # no points left when it entered
            named = [t for t, r in sent if r["stage_days"] == stage and lot.key in {l["key"] for l in r["lots"]}]
            assert any(entry - LOOKAHEAD <= t <= entry for t in named), (
                f"{lot.key} entered the {stage}-day stage at {entry.astimezone(RIYADH)}, known since "
                f"{known.astimezone(RIYADH)}; named at {[t.astimezone(RIYADH).isoformat() for t in named]}")


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=lot_specs, events=event_times)
@example(specs=[(0, 40 * 24, 100, None), (0, 40 * 24 + 1, 900, None)], events=[])  # the close lots
# Found by Hypothesis: the stage's time was kept to the ms, rounded down, so the next 30-day
# reminder went out 0.2 ms short of the look-ahead.
@example(specs=[(0, 1, 1, None), (1, 548, 1, None), (358, 216, 1, None)], events=[345])
# Issue 15 item 15: `make demo`'s customer 1003, a 7-day and a 30-day stage due on the first read:
# two messages at the same moment, where one names both.
@example(specs=[(0, 6 * 24, 25, None), (0, 25 * 24, 80, None)], events=[])
def test_every_lot_is_named_in_time_never_twice_a_stage_within_the_look_ahead(specs, events):
    check(simulate(specs, events))


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=lot_specs, events=event_times)
def test_the_same_without_quiet_hours(specs, events):
    check(simulate(specs, events, quiet="off"))


def test_close_lots_share_each_stage_and_the_larger_one_is_never_hidden():
    """Lot A (100 points) and lot B (900 points, expiring 10 minutes after A)."""
    expires = T0 + timedelta(days=40)
    sim = Simulation([TrueLot("A", T0, expires, 100, None),
                      TrueLot("B", T0, expires + timedelta(minutes=10), 900, None)], "21:00-09:00")
    sim.read()
    sim.run_until(T0 + timedelta(days=45))
    got = [(r["stage_days"], sorted(l["key"] for l in r["lots"]), r["points_expiring"]) for _, r in sim.channel.sent]
    assert got == [(30, ["A", "B"], 1000), (7, ["A", "B"], 1000), (1, ["A", "B"], 1000)]
    for when, reminder in sim.channel.sent:
        assert when <= expires - timedelta(days=reminder["stage_days"])  # before A enters the stage
    check(sim)


# -- one plan at a time --------------------------------------------------------------------------
plan_lots = st.lists(st.tuples(st.integers(1, 40 * 24 * 60),     # expires in (minutes from now)
                               st.integers(1, 500),              # points
                               st.sampled_from([None, 30, 7, 1])),  # nearest stage already named at
                     min_size=1, max_size=6)


def _planned(lot_specs, quiet: str, since_minutes: int | None):
    from service.domain.schedule import plan
    from service.domain.send_window import parse_quiet_hours

    lots = [TrueLot(f"l{i}", T0 - timedelta(days=60), T0 + minutes * timedelta(minutes=1), points, None).at(T0)
            for i, (minutes, points, _) in enumerate(lot_specs)]
    reminded = {f"l{i}": named for i, (_, _, named) in enumerate(lot_specs) if named is not None}
    stage_sent = {} if since_minutes is None else {
        stage: (T0 - since_minutes * timedelta(minutes=1)).timestamp() for stage in STAGES}
    return plan(lots, T0, STAGES, "Asia/Riyadh", parse_quiet_hours(quiet), reminded, stage_sent=stage_sent,
                lookahead=LOOKAHEAD)


@hsettings(max_examples=300, deadline=None)
@given(lot_specs=plan_lots, quiet=st.sampled_from(["21:00-09:00", "off", "11:00-13:00"]),
       since_minutes=st.none() | st.integers(0, 3 * 24 * 60))
# The case, common after a backfill: a lot in the 7-day stage that enters the 1-day stage
# within the look-ahead (expires in 36 h), beside a lot already in the 1-day stage (expires in 12 h).
@example(lot_specs=[(12 * 60, 90, None), (36 * 60, 25, None)], quiet="off", since_minutes=None)
def test_no_lot_is_named_twice_in_one_plan(lot_specs, quiet, since_minutes):
    """Issue 15 item 14: on any single plan (what goes out now and what is held), no lot is named
    by two reminders: a lot entering a nearer stage within the look-ahead, beside one already in
    it, was named by both that stage's reminder and its current stage's."""
    decision = _planned(lot_specs, quiet, since_minutes)
    named = [lot.key for group in decision.send_now + [group for _, group in decision.hold] for lot in group.lots]
    assert len(named) == len(set(named)), f"named twice: {sorted(named)}"
