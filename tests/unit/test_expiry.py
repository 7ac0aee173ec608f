from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from service.domain.expiry import due_groups, stage_of
from service.domain.loyalty import Lot

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
STAGES = (30, 7, 1)


def lot(expires_in: timedelta, points=100, used=0, key=None) -> Lot:
    return Lot(key=key or f"k{expires_in.total_seconds()}-{points}-{used}", name="", points=points, used_points=used,
               status="مؤكدة", created_at=NOW - timedelta(days=300), expires_at=NOW + expires_in,
               order_id=None, reference_id=None)


def test_a_lot_belongs_to_the_nearest_stage_it_has_entered():
    assert stage_of(lot(timedelta(days=3)), NOW, STAGES) == 7
    assert stage_of(lot(timedelta(days=20)), NOW, STAGES) == 30
    assert stage_of(lot(timedelta(hours=12)), NOW, STAGES) == 1
    assert stage_of(lot(timedelta(days=7)), NOW, STAGES) == 7  # boundary: entered
    assert stage_of(lot(timedelta(days=30, seconds=1)), NOW, STAGES) is None  # not yet due


def test_expired_and_used_lots_are_left_out():
    assert stage_of(lot(timedelta(seconds=0)), NOW, STAGES) is None
    assert stage_of(lot(-timedelta(days=1)), NOW, STAGES) is None
    assert stage_of(lot(timedelta(days=3), points=100, used=100), NOW, STAGES) is None


def test_one_group_per_stage_with_totals():
    lots = [lot(timedelta(days=3), points=500, used=100), lot(timedelta(days=5), points=50),
            lot(timedelta(days=20), points=70), lot(timedelta(hours=5), points=10), lot(timedelta(days=90))]
    groups = due_groups(lots, NOW, STAGES)
    assert [(g.stage_days, g.points_expiring, len(g.lots)) for g in groups] == [(1, 10, 1), (7, 450, 2), (30, 70, 1)]
    assert groups[1].earliest_expiry == NOW + timedelta(days=3)


def test_minimum_points():
    lots = [lot(timedelta(days=3), points=5)]
    assert due_groups(lots, NOW, STAGES, min_points=10) == []
    assert len(due_groups(lots, NOW, STAGES, min_points=5)) == 1


lots_strategy = st.lists(
    st.builds(
        lambda seconds, points, used, i: lot(timedelta(seconds=seconds), points, used, key=f"lot{i}"),
        st.integers(min_value=-10 * 86400, max_value=60 * 86400),
        st.integers(min_value=-1000, max_value=10_000),
        st.integers(min_value=-1000, max_value=10_000),
        st.integers(),
    ),
    max_size=30,
)
stages_strategy = st.sets(st.integers(min_value=1, max_value=90), min_size=1, max_size=5)


@given(lots=lots_strategy, stages=stages_strategy)
def test_points_expiring_never_exceed_points_remaining(lots, stages):
    groups = due_groups(lots, NOW, stages)
    assert sum(g.points_expiring for g in groups) <= sum(l.remaining for l in lots)
    for group in groups:
        assert group.points_expiring == sum(l.remaining for l in group.lots) > 0


@given(lots=lots_strategy, stages=stages_strategy)
def test_a_lot_is_in_at_most_one_stage(lots, stages):
    seen = [id(l) for g in due_groups(lots, NOW, stages) for l in g.lots]
    assert len(seen) == len(set(seen))


@given(lots=lots_strategy, stages=stages_strategy)
def test_every_grouped_lot_expires_within_its_stage_and_not_within_a_nearer_one(lots, stages):
    for group in due_groups(lots, NOW, stages):
        nearer = [s for s in stages if s < group.stage_days]
        for l in group.lots:
            left = l.expires_at - NOW
            assert timedelta(0) < left <= timedelta(days=group.stage_days)
            assert all(left > timedelta(days=s) for s in nearer)
