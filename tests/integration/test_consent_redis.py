"""Profile fields in event-time order on a real Redis (the Lua script of service/state/profiles.py)."""
from __future__ import annotations

import threading

import pytest
import redis
import requests

from service.domain.events import Customer
from tests.conftest import make_settings
from workers import sync
from service.ops.runtime import build_runtime

pytestmark = pytest.mark.integration

M = 1305146709
OLDER, NEWER = "Tue Nov 24 2026 10:00:00 GMT+0300", "Tue Nov 24 2026 10:05:00 GMT+0300"


def _event(customer_id: int, created_at: str, enabled: bool, name: str) -> dict:
    return {"event": "customer.updated", "merchant_id": M, "event_created_at": created_at,
            "customer": {"id": customer_id, "name": name, "mobile": f"+9665000{customer_id:05d}", "email": None,
                         "notifications_enabled": enabled}}


def _runtime(redis_url):
    return build_runtime(make_settings(), redis.Redis.from_url(redis_url, decode_responses=True), requests.Session())


def test_two_events_applied_in_reverse_order_keep_the_newer_opt_out(redis_url):
    """Issue 15 item 8: on a real Redis, the newer opt-out first, then Salla's late retry of the
    older event: notifications stay off, the newer name stays."""
    rt = _runtime(redis_url)
    rt.registry.set_state(M, "active")
    sync.accept_event(rt, _event(7, NEWER, False, "newer"))
    sync.accept_event(rt, _event(7, OLDER, True, "older"))
    customer = rt.profiles.load(M, 7)
    assert customer.notifications_enabled is False and customer.name == "newer"


def test_two_workers_applying_two_events_at_once_never_lose_the_newer(redis_url):
    """Issue 15 item 8: two workers (two connections) apply an older opt-in and a newer opt-out of
    the same customers at the same moment; whichever lands last, every customer ends opted out."""
    customers = range(1, 301)
    barrier = threading.Barrier(2)

    def apply(created_at: str, enabled: bool, name: str):
        rt = _runtime(redis_url)
        moment = sync.event_moment({"event_created_at": created_at}, 0.0)
        barrier.wait()
        for customer_id in customers:
            rt.profiles.save(M, Customer(customer_id, name, "+966500000001", None, enabled), at=moment)

    workers = [threading.Thread(target=apply, args=(NEWER, False, "newer")),
               threading.Thread(target=apply, args=(OLDER, True, "older"))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rt = _runtime(redis_url)
    loaded = [rt.profiles.load(M, c) for c in customers]
    assert {c.notifications_enabled for c in loaded} == {False} and {c.name for c in loaded} == {"newer"}


def test_a_profile_created_again_starts_from_its_suppression_entries(redis_url):
    """Issue 15 item 9: on a real Redis (the script's HMGET of missing fields answers false):
    unsubscribed by link, profile erased, Salla sends the customer again: still opted out; a
    Salla opt-out is lifted by a newer opt-in only."""
    rt = _runtime(redis_url)
    rt.registry.set_state(M, "active")
    sync.accept_event(rt, _event(8, OLDER, True, "link"))
    rt.profiles.unsubscribe(M, 8, 1_800_000_000.0)
    sync.accept_event(rt, _event(9, OLDER, False, "flag"))
    rt.store.delete(rt.keys.store(M).profile(8), rt.keys.store(M).profile(9))
    sync.accept_event(rt, _event(8, NEWER, True, "link"))
    sync.accept_event(rt, _event(9, "Tue Nov 24 2026 09:00:00 GMT+0300", True, "flag"))  # older: stays out
    assert rt.store.hget(rt.keys.store(M).profile(9), "notifications_enabled") == "0"  # written when re-created
    assert rt.profiles.load(M, 8).notifications_enabled is False
    assert rt.profiles.load(M, 9).notifications_enabled is False
    sync.accept_event(rt, _event(9, NEWER, True, "flag"))
    assert rt.profiles.load(M, 9).notifications_enabled is True
