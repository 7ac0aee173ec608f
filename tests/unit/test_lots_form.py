"""The last read's lots in their shorter stored form (issue 18 goal 1): the expiry as unix
seconds in the record's zone offset, Salla's known words as small numbers, no trailing nulls;
rows of the previous form still read."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from service.domain import loyalty
from service.domain.loyalty import Lot

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
RIYADH, DUBAI = timezone(timedelta(hours=3)), timezone(timedelta(hours=4))


def lot(days, zone=RIYADH, name="مخصصة", status="مؤكدة", order_id="7100000000", reference_id=None, micro=0):
    return Lot(key=f"{days:016x}", name=name, points=100, used_points=0, status=status,
               created_at=(NOW - timedelta(days=200)).astimezone(zone),
               expires_at=(NOW + timedelta(days=days)).astimezone(zone).replace(microsecond=micro),
               order_id=order_id, reference_id=reference_id)


def test_the_stored_row_holds_no_date_text_no_known_word_no_trailing_null():
    raw = loyalty._lots_json([lot(3), lot(20)], NOW)
    record = json.loads(raw)
    assert record["z"] == 10800
    assert record["l"][0] == ["0000000000000003", 1, 100, 0, 2, int((NOW - timedelta(days=200)).timestamp()),
                              int((NOW + timedelta(days=3)).timestamp()), "7100000000"]
    assert "مؤكدة" not in raw and "+03:00" not in raw


def test_what_the_short_form_cannot_say_is_kept_in_full_and_reads_back():
    lots = [lot(3), lot(20, zone=DUBAI), lot(40, micro=250), lot(50, name="نقاط هدية", status="معلقة",
                                                                   order_id=None, reference_id="77")]
    read_at, back = loyalty._lots_from_json(loyalty._lots_json(lots, NOW))
    assert read_at == NOW.timestamp() and back == lots
    assert [b.expires_at.utcoffset() for b in back] == [x.expires_at.utcoffset() for x in lots]
    assert [b.name for b in back][-1] == "نقاط هدية" and back[-1].status == "معلقة"
    assert loyalty._lots_from_json(loyalty._lots_json([], NOW)) == (NOW.timestamp(), [])


def test_rows_of_the_previous_form_still_read():
    lots = [lot(3), lot(20, order_id=None, reference_id="9")]
    rows = [[x.key, x.name, x.points, x.used_points, x.status, int(x.created_at.timestamp()), x.expires_at.isoformat(),
             x.order_id, x.reference_id] for x in lots]
    raw = json.dumps({"r": NOW.timestamp(), "l": rows}, ensure_ascii=False, separators=(",", ":"))
    assert loyalty._lots_from_json(raw) == (NOW.timestamp(), lots)
