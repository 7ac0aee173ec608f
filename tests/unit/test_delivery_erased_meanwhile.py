"""Issue 15: a delivery already in progress while forget-customer or uninstall runs must stop:
no send, no ledger write that re-creates the erased record (without TTL or customer_id), no
timer re-armed for the erased customer."""
from __future__ import annotations

import fakeredis
import pytest
import requests

from service.ops import personal_data
from service.ops.runtime import build_runtime
from service.state.stores import UNINSTALLED
from tests.conftest import make_settings
from workers import lifecycle
from workers.delivery import deliver, queue_reminder

M, C = 1, 2
RID = "c0ffee00c0ffee00c0ffee00c0ffee00"
REMINDER = {
    "reminder_id": RID, "merchant_id": M, "customer_id": C,
    "customer": {"name": "سارة", "mobile": "+966501234567", "email": "s@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-28T12:00:00+03:00",
    "language": "ar", "message": "مرحباً سارة", "lots": [{"key": "a"}], "generated_at": "2026-11-25T12:00:00+00:00",
}
NOW = 1_800_000_000.0


class Recorder:
    def __init__(self, name):
        self.name = name
        self.sent = []

    def send(self, reminder):
        self.sent.append(reminder["reminder_id"])


def forget(rt):
    personal_data.forget(rt.store, rt.settings.redis_key_prefix, M, C, NOW, secrets=rt.settings.token_encryption_keys)


def uninstall(rt):
    rt.registry.set_state(M, UNINSTALLED)
    lifecycle.forget_store(rt, M)


def snapshot(rt) -> dict:
    """Every key with its TTL, and every member of a sorted set (the due set's timers)."""
    found = {}
    for key in rt.store.scan_iter("*"):
        members = rt.store.zrange(key, 0, -1) if rt.store.type(key) == "zset" else None
        found[key] = (rt.store.ttl(key) == -1, members)
    return found


def erased_mid_delivery(rt, erase, where):
    """Deliver, with `erase` run after deliver read the record: at `where` ('channels': before the
    attempt begins; 'send': while the first channel sends). Returns (result, keys after erase)."""
    seen = {}
    if where == "channels":
        def channels_for(merchant_id):
            erase(rt)
            seen["after"] = snapshot(rt)
            return rt.channels, "all"
        rt.channels_for = channels_for
    else:
        first = rt.channels[0]
        send = first.send

        def erasing_send(reminder):
            send(reminder)
            erase(rt)
            seen["after"] = snapshot(rt)
        first.send = erasing_send
    result = deliver(rt, M, C, RID, NOW)
    return result, seen["after"]


@pytest.mark.parametrize("erase", [forget, uninstall], ids=["forget", "uninstall"])
@pytest.mark.parametrize("where", ["channels", "send"])
def test_an_erasure_during_a_delivery_stops_it_and_leaves_nothing_behind(erase, where):
    """Issue 15: forget/uninstall between deliver's read of the record and the send: before, the
    attempt's HINCRBY/HSET and the channel claim re-created the record with no TTL and no
    customer_id, the send went out and was recorded (a message-id key kept 400 days), ledger.get
    raised KeyError and the timer was re-armed. Now: nothing sent after the erasure, no key written
    or re-armed (the keys are exactly those the erasure left), the ledger says None."""
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session(),
                       clock=lambda: NOW)
    rt.channels = [Recorder("log"), Recorder("webhook")]
    assert queue_reminder(rt, REMINDER, 86400, NOW, lambda *a: None) == "created"
    result, after = erased_mid_delivery(rt, erase, where)
    assert result == "gone"
    sent = [channel.sent for channel in rt.channels]
    assert sent == ([[], []] if where == "channels" else [[RID], []])  # nothing after the erasure
    assert snapshot(rt) == after  # no key re-created, none left without a TTL, no timer re-armed
    assert not rt.store.exists(rt.keys.store(M).reminder(RID))
    assert rt.ledger.get(M, RID) is None  # no KeyError on a half record
    assert all(entry.customer_id != C for entry in rt.due.claim(1e12, 10_000))


def test_a_ledger_write_never_recreates_an_erased_record():
    """Issue 15: every write of a record checks it exists, in the same step: before, begin_attempt,
    claim_channel, channel_result and retrying re-created an erased record as a hash without TTL."""
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session(),
                       clock=lambda: NOW)
    key = rt.keys.store(M).reminder(RID)
    assert rt.ledger.begin_attempt(M, RID, NOW) is None
    assert rt.ledger.claim_channel(M, RID, "log", 1, NOW) == "gone"
    assert rt.ledger.channel_result(M, RID, "log", "retry:x") is False
    assert rt.ledger.retrying(M, RID, "x", NOW) is False
    assert rt.ledger.record_send(M, RID, "log", "mid-1", NOW) is None
    assert rt.ledger.replay(M, RID, NOW) is None
    assert not rt.store.exists(key) and list(rt.store.scan_iter("*")) == []
