from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from service.domain.loyalty import LotError, parse_history, parse_lot
from tests.conftest import sample


def row(**overrides):
    base = {
        "name": "مخصصة", "points": 900, "used_points": 0, "status": "مؤكدة",
        "created_at": {"date": "2024-12-17 17:42:14.000000", "timezone_type": 3, "timezone": "Asia/Riyadh"},
        "expiry_date": "2029-02-17 17:42:14", "order_id": 98787845454, "used_at": {}, "notes": "n",
        "reference_id": 3215487,
    }
    base.update(overrides)
    return base


def test_sample_page_parses():
    lots, problems = parse_history(sample("loyalty-points.page1.json")["data"])
    assert problems == []
    assert [lot.remaining for lot in lots] == [900, 900]
    assert lots[0].order_id == "98787845454" and lots[0].reference_id == "3215487"
    assert lots[1].order_id is None and lots[1].reference_id is None


def test_expiry_is_read_in_the_zone_created_at_names():
    lot = parse_lot(row())
    assert lot.expires_at == datetime(2029, 2, 17, 14, 42, 14, tzinfo=timezone.utc)
    assert lot.expires_at.isoformat() == "2029-02-17T17:42:14+03:00"


def test_other_zone_and_default_zone():
    dubai = parse_lot(row(created_at={"date": "2024-12-17 17:42:14.000000", "timezone_type": 3, "timezone": "Asia/Dubai"}))
    assert dubai.expires_at.utcoffset() == timedelta(hours=4)
    unknown = parse_lot(row(created_at={"date": "2024-12-17 17:42:14.000000", "timezone": "Nowhere/Else"}), "Africa/Cairo")
    assert str(unknown.expires_at.tzinfo) == "Africa/Cairo"
    plain = parse_lot(row(created_at="2024-12-17 17:42:14"), "Asia/Riyadh")
    assert plain.expires_at.utcoffset() == timedelta(hours=3)


@pytest.mark.parametrize("changes", [
    {"order_id": "98787845454", "reference_id": "3215487"},
    {"order_id": None, "reference_id": None},
    {"used_at": None}, {"used_at": "2025-12-31 23:59:59"}, {"used_at": {}},
    {"points": "900"}, {"points": 900.0},
])
def test_observed_value_shapes(changes):
    lot = parse_lot(row(**changes))
    assert lot.remaining == 900


def test_notes_may_be_absent():
    data = row()
    del data["notes"], data["used_at"]
    assert parse_lot(data).points == 900


def test_remaining_never_below_zero():
    assert parse_lot(row(points=100, used_points=150)).remaining == 0
    assert parse_lot(row(points=-50, used_points=0)).remaining == 0
    assert parse_lot(row(points=100, used_points=40)).remaining == 60


def test_key_is_stable_and_ignores_usage():
    assert parse_lot(row()).key == parse_lot(row(used_points=300, used_at="2025-01-01 00:00:00")).key
    assert parse_lot(row()).key != parse_lot(row(expiry_date="2029-02-18 17:42:14")).key
    assert parse_lot(row()).key == parse_lot(row(order_id="98787845454", reference_id="3215487")).key


@pytest.mark.parametrize("changes, field", [
    ({"expiry_date": None}, "expiry_date"),
    ({"expiry_date": "soon"}, "expiry_date"),
    ({"created_at": None}, "created_at"),
    ({"points": "many"}, "points"),
    ({"points": 1.5}, "points"),
    ({"points": True}, "points"),
    ({"used_points": None}, "used_points"),
])
def test_unreadable_rows_name_the_field(changes, field):
    with pytest.raises(LotError, match=field):
        parse_lot(row(**changes))


def test_history_keeps_readable_rows_and_reports_the_rest():
    lots, problems = parse_history([row(), "junk", row(expiry_date="never")])
    assert len(lots) == 1
    assert problems == ["row 1: row is not an object", "row 2: expiry_date 'never' is not a date"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(list(row().keys())), json_values))
def test_any_row_parses_or_raises_lot_error(changes):
    try:
        parse_lot(row(**changes))
    except LotError:
        pass
