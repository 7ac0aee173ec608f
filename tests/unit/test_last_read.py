"""Issue 18 goal 1: the customer's last read is kept in their profile hash (`L` fields,
service/state/last_read.py), one key a customer fewer; a read that would not fit a listpack,
and `lots:<c>` written by an earlier version, are kept and read as JSON in `lots:<c>`."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import fakeredis
import requests

from service.domain import loyalty
from service.domain.events import Customer
from service.domain.loyalty import Lot
from service.ops import personal_data
from service.ops.runtime import build_runtime
from tests.conftest import make_settings
from workers import reminding

M, C = 1305146709, 5
NOW = datetime(2026, 11, 25, 12, 0, 0, 250000, tzinfo=timezone.utc)
RIYADH, DUBAI = timezone(timedelta(hours=3)), timezone(timedelta(hours=4))


def runtime():
    store = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return build_runtime(make_settings(QUIET_HOURS="off", DATA_RETENTION_DAYS="10"), store, requests.Session(),
                         clock=lambda: NOW.timestamp())


def lot(days, key=None, zone=RIYADH, name="مخصصة", status="مؤكدة", order_id="7100000000", reference_id=None,
        used=0, micro=0):
    return Lot(key=key or f"{days:016x}", name=name, points=100, used_points=used, status=status,
               created_at=(NOW - timedelta(days=200)).astimezone(zone).replace(microsecond=0),
               expires_at=(NOW + timedelta(days=days)).astimezone(zone).replace(microsecond=micro),
               order_id=order_id, reference_id=reference_id)


SARA = Customer(C, "سارة", "+966500000001", "s@x.sa", True, lang="ar")


def test_the_read_is_kept_in_the_profile_in_short_fields_and_reads_back_whole():
    lots = [lot(3), lot(20, zone=DUBAI), lot(40, micro=250), lot(50, key="lot-a", name="نقاط", status="معلقة",
                                                                   order_id=None, reference_id="77"),
            lot(60, order_id="007", used=30)]
    fields = loyalty._lots_fields(lots, NOW)
    assert fields["L"] == str(round(NOW.timestamp() * 1000)) and fields["L."] == "10800"
    assert fields["LAAAAAAAAAAM"] == f"0,100,259200,-{200 * 86400},7100000000"  # usual name, status, none used
    assert "L:lot-a" in fields and all(len(value.encode()) <= 64 for value in fields.values())
    assert loyalty._lots_from_fields(fields) == (round(NOW.timestamp(), 3), lots)
    assert loyalty._lots_from_fields(loyalty._lots_fields([], NOW)) == (round(NOW.timestamp(), 3), [])
    assert loyalty._lots_from_fields({"name": "x"}) is None


def test_after_a_read_the_profile_holds_the_lots_and_no_lots_key_is_left():
    rt = runtime()
    k = rt.keys.store(M)
    rt.profiles.save(M, SARA, NOW.timestamp())
    rt.store.set(k.lots(C), loyalty._lots_json([lot(9)], NOW), ex=100)  # the previous form, an earlier version's
    reminding.after_read(rt, M, SARA, [lot(3), lot(20)], NOW, lambda *a: None)
    assert not rt.store.exists(k.lots(C))
    raw = rt.store.hgetall(k.profile(C))
    assert {"name", "mobile", "t", "L", "L.", "LAAAAAAAAAAM", "LAAAAAAAAABQ"} == set(raw) - {"email", "lang",
                                                                                             "notifications_enabled"}
    assert reminding.load_lots(rt, M, C)[1] == [lot(3), lot(20)]
    assert rt.profiles.load(M, C) == SARA  # the profile reads as it did
    # A later read replaces the lots, none of the last read's left.
    reminding.after_read(rt, M, SARA, [lot(20)], NOW, lambda *a: None)
    assert reminding.load_lots(rt, M, C)[1] == [lot(20)] and "LAAAAAAAAAAM" not in rt.store.hkeys(k.profile(C))


def test_lots_of_an_earlier_version_are_read_and_settled_against():
    rt = runtime()
    k = rt.keys.store(M)
    rt.profiles.save(M, SARA, NOW.timestamp())
    rt.store.set(k.lots(C), loyalty._lots_json([lot(3, used=0)], NOW - timedelta(days=1)))
    assert reminding.load_lots(rt, M, C) == ((NOW - timedelta(days=1)).timestamp(), [lot(3)])
    exported = personal_data.export(rt.store, rt.settings.redis_key_prefix, M, C)
    assert [x["key"] for x in exported["lots"]["lots"]] == [lot(3).key]


def test_a_read_that_does_not_fit_a_listpack_is_kept_as_json_and_the_next_that_fits_moves_back():
    rt = runtime()
    k = rt.keys.store(M)
    rt.profiles.save(M, SARA, NOW.timestamp())
    long = [lot(3, name="نقاط مكافأة على طلب طويل الاسم جدا")]
    reminding.after_read(rt, M, SARA, [lot(20)], NOW, lambda *a: None)
    reminding.after_read(rt, M, SARA, long, NOW, lambda *a: None)
    assert not [name for name in rt.store.hkeys(k.profile(C)) if name.startswith("L")]
    assert json.loads(rt.store.get(k.lots(C)))["l"] and reminding.load_lots(rt, M, C)[1] == long
    assert 9 * 86400 < rt.store.ttl(k.lots(C)) <= rt.store.ttl(k.profile(C))  # the profile's lifetime
    reminding.after_read(rt, M, SARA, [lot(20)], NOW, lambda *a: None)
    assert not rt.store.exists(k.lots(C)) and reminding.load_lots(rt, M, C)[1] == [lot(20)]


def test_the_lots_live_as_the_profile_and_a_read_alone_keeps_them_the_retention_period():
    rt = runtime()
    k = rt.keys.store(M)
    reminding.save_lots(rt, M, C, [lot(3)], NOW)  # no profile: the read alone
    assert 9 * 86400 < rt.store.ttl(k.profile(C)) <= 10 * 86400
    rt.store.expire(k.profile(C), 3600)
    reminding.save_lots(rt, M, C, [lot(3)], NOW)
    assert rt.store.ttl(k.profile(C)) <= 3600  # a read does not extend it
    rt.profiles.save(M, SARA, NOW.timestamp())  # an event: seen again, the lots with the profile
    assert rt.store.ttl(k.profile(C)) > 9 * 86400 and reminding.load_lots(rt, M, C)[1] == [lot(3)]


def test_a_profile_holding_only_a_read_counts_as_created_again_for_the_suppression():
    """A customer who unsubscribed, then was forgotten: a read before the next event leaves a
    profile hash with the lots only. The event's profile is created again, so the suppression
    entries speak first (as when there is no hash at all): the link's opt-out is written back."""
    rt = runtime()
    k = rt.keys.store(M)
    rt.profiles.save(M, SARA, NOW.timestamp())
    rt.profiles.unsubscribe(M, C, NOW.timestamp())
    rt.store.delete(*rt.keys.store(M).customer_keys(C))  # forgotten; the suppression entries stay
    reminding.save_lots(rt, M, C, [lot(3)], NOW)
    rt.profiles.save(M, Customer(C, "سارة", "+966500000001", "s@x.sa", None, lang="ar"), NOW.timestamp() + 60)
    raw = rt.store.hgetall(k.profile(C))
    assert raw.get("unsubscribed_at") and raw.get("notifications_enabled") == "0", raw


def test_the_export_shows_the_profile_without_the_read_and_the_read_as_lots():
    rt = runtime()
    rt.profiles.save(M, SARA, NOW.timestamp())
    reminding.after_read(rt, M, SARA, [lot(3), lot(20)], NOW, lambda *a: None)
    exported = personal_data.export(rt.store, rt.settings.redis_key_prefix, M, C)
    assert not [name for name in exported["profile"] if name.startswith("L")]
    assert exported["profile"]["mobile"] == "+966500000001"
    assert [x["key"] for x in exported["lots"]["lots"]] == [lot(3).key, lot(20).key]
    assert exported["lots"]["read_at"] == round(NOW.timestamp(), 3)


def test_during_an_upgrade_the_later_of_the_two_reads_counts():
    """A worker of the earlier version writes `lots:<c>` only, beside the profile's fields that a
    new one wrote: the later read counts, whichever holds it; the next read keeps one."""
    rt = runtime()
    k = rt.keys.store(M)
    rt.profiles.save(M, SARA, NOW.timestamp())
    reminding.save_lots(rt, M, C, [lot(3)], NOW)
    rt.store.set(k.lots(C), loyalty._lots_json([lot(20)], NOW + timedelta(hours=1)))  # the earlier version's
    assert reminding.load_lots(rt, M, C) == ((NOW + timedelta(hours=1)).timestamp(), [lot(20)])
    rt.store.set(k.lots(C), loyalty._lots_json([lot(40)], NOW - timedelta(hours=1)))
    assert reminding.load_lots(rt, M, C)[1] == [lot(3)]
    reminding.after_read(rt, M, SARA, [lot(60)], NOW + timedelta(hours=2), lambda *a: None)
    assert not rt.store.exists(k.lots(C)) and reminding.load_lots(rt, M, C)[1] == [lot(60)]
