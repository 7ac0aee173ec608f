"""The profile's event times kept compactly (issue 18 goal 1): one `t` for the fields the newest
event wrote, a `t:<field>` only for a field an older event wrote; profiles in the previous form
(a `t:<field>` beside every field) still read and keep their order."""
from __future__ import annotations

import fakeredis

from service.domain.events import Customer
from service.state.keys import Keys
from service.state.profiles import Profiles

M, C = 1305146709, 1001
T0 = 1_796_000_000.0


def profiles():
    return Profiles(fakeredis.FakeRedis(decode_responses=True), "t:")


def customer(enabled=None, name="سارة"):
    return Customer(id=C, name=name, mobile="+966500000001", email="sara@example.sa",
                    notifications_enabled=enabled, lang="ar")


def raw(p):
    return p.redis.hgetall(Keys("t:").store(M).profile(C))


def test_one_event_leaves_one_time_not_one_per_field():
    p = profiles()
    p.save(M, customer(enabled=True), at=T0)
    assert raw(p) == {"name": "سارة", "mobile": "+966500000001", "email": "sara@example.sa",
                      "notifications_enabled": "1", "lang": "ar", "t": f"{T0:.3f}"}


def test_a_field_the_newer_event_left_alone_keeps_its_own_time():
    p = profiles()
    p.save(M, customer(enabled=False), at=T0)  # customer.updated: opted out
    p.save(M, customer(name="سارة ب"), at=T0 + 60)  # an order: no flag
    stored = raw(p)
    assert stored["t"] == f"{T0 + 60:.3f}" and stored["t:notifications_enabled"] == f"{T0:.3f}"
    assert not any(k.startswith("t:") and k != "t:notifications_enabled" for k in stored)
    # A retry of an older customer.updated (opted in) before the opt-out: refused.
    p.save(M, customer(enabled=True, name="قديم"), at=T0 - 60)
    assert p.load(M, C).notifications_enabled is False and p.load(M, C).name == "سارة ب"
    # A customer.updated between the two: its flag is newer than the opt-out, its name older than the order's.
    assert p.save(M, customer(enabled=True, name="بين"), at=T0 + 30) is True
    loaded = p.load(M, C)
    assert loaded.notifications_enabled is True and loaded.name == "سارة ب"
    assert raw(p)["t:notifications_enabled"] == f"{T0 + 30:.3f}"


def test_a_field_never_written_takes_an_older_event():
    p = profiles()
    p.save(M, customer(), at=T0 + 60)  # an order first: no flag
    assert p.save(M, customer(enabled=False), at=T0) is False  # the older customer.updated's opt-out
    assert p.load(M, C).notifications_enabled is False
    assert p.load(M, C).name == "سارة"


def test_a_profile_in_the_previous_form_still_reads_and_keeps_its_order():
    p = profiles()
    key = Keys("t:").store(M).profile(C)
    old = f"{T0:.3f}"
    p.redis.hset(key, mapping={"name": "قديم", "t:name": old, "mobile": "+966500000001", "t:mobile": old,
                               "email": "sara@example.sa", "t:email": old, "notifications_enabled": "0",
                               "t:notifications_enabled": old, "lang": "ar", "t:lang": old})
    assert p.load(M, C).notifications_enabled is False and p.load(M, C).name == "قديم"
    assert p.save(M, customer(enabled=True), at=T0 - 1) is None  # older than what is stored: refused
    assert p.load(M, C).notifications_enabled is False
    p.save(M, customer(name="جديد"), at=T0 + 1)  # newer, no flag
    stored = raw(p)
    assert stored["name"] == "جديد" and stored["t"] == f"{T0 + 1:.3f}" and "t:name" not in stored
    assert stored["t:notifications_enabled"] == old and stored["notifications_enabled"] == "0"
