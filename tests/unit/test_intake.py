"""Accepted webhooks wait in their store's inbox; drains take them in batches; beat recovers."""
import fakeredis
import pytest
import requests

from service.state.intake import CLAIM_SECONDS, NUDGE_SECONDS, PUBLISH, RECOVER_AFTER_SECONDS, REPEAT, STORED, Intake
from service.state.keys import Keys
from tests.conftest import make_settings
from workers import tasks
from service.ops.runtime import build_runtime

M = 1305146709
EVENT = {"event": "order.created", "merchant_id": M, "event_created_at": "", "received_at": "",
         "customer": {"id": 7, "name": "سارة", "mobile": "+966500000001", "email": None,
                      "notifications_enabled": None}}


@pytest.fixture
def intake():
    return Intake(fakeredis.FakeRedis(decode_responses=True), "t:")


def test_the_first_event_of_a_burst_publishes_a_drain_the_rest_only_wait(intake):
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0) == PUBLISH
    assert intake.accept(M, "d2", EVENT, seen_ttl=86400, now=1000.1) == STORED
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.2) == REPEAT  # the same bytes again
    assert intake.accept(1, "d9", EVENT, seen_ttl=86400, now=1000.3) == PUBLISH  # another store
    assert intake.waiting(M) == 2
    # A drain took and handled them: the next webhook finds the inbox empty and publishes again.
    intake.done(M, [raw for raw, _ in intake.claim(M, 1001.0)])
    assert intake.accept(M, "d3", EVENT, seen_ttl=86400, now=1002.0) == PUBLISH


def test_a_webhook_that_finds_an_undrained_inbox_publishes_a_drain_once_per_nudge(intake):
    """A drain that failed while Redis restarted leaves events in a non-empty inbox: without
    the nudge, nothing drained them until beat's recovery a minute later (the Redis-restart
    test caught it)."""
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0) == PUBLISH  # its drain is lost
    assert intake.accept(M, "d2", EVENT, seen_ttl=86400, now=1000.0 + NUDGE_SECONDS - 1) == STORED
    assert intake.accept(M, "d3", EVENT, seen_ttl=86400, now=1000.0 + NUDGE_SECONDS + 1) == PUBLISH
    # At most one extra drain per NUDGE_SECONDS, however many webhooks find the backlog.
    assert intake.accept(M, "d4", EVENT, seen_ttl=86400, now=1000.0 + NUDGE_SECONDS + 2) == STORED
    # Events under a drain's claim are being handled: no nudge for them.
    other = 77
    assert intake.accept(other, "e1", EVENT, seen_ttl=86400, now=2000.0) == PUBLISH
    intake.claim(other, 2000.0)
    assert intake.accept(other, "e2", EVENT, seen_ttl=86400, now=2000.0 + NUDGE_SECONDS + 1) == STORED


def test_a_redis_that_lost_its_scripts_still_accepts(intake):
    """A restarted (or flushed) Redis has no scripts: the webhook's EVALSHA loads it again
    rather than answering 503 until something else does."""
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0) == PUBLISH
    intake.redis.script_flush()
    assert intake.accept(M, "d2", EVENT, seen_ttl=86400, now=1000.1) == STORED
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.2) == REPEAT
    assert intake.waiting(M) == 2


def test_the_webhook_keys_are_the_store_keys():
    keys = Keys("t:")
    k = keys.store(M)
    assert keys.intake(M, "abc") == (k.seen("abc"), k.inbox, k.inbox_nudged)


def test_drains_claim_batches_and_never_the_same_event_twice(intake):
    for n in range(5):
        intake.accept(M, f"d{n}", EVENT, seen_ttl=86400, now=1000.0)
    first = intake.claim(M, 1001.0, limit=3)
    second = intake.claim(M, 1001.0, limit=3)  # a second drain at the same moment
    assert [e["digest"] for _, e in first] + [e["digest"] for _, e in second] == ["d0", "d1", "d2", "d3", "d4"]
    assert first[0][1] == dict(EVENT, digest="d0")
    intake.done(M, [raw for raw, _ in first])
    # The second drain died: its events come back when their claim ends.
    assert intake.claim(M, 1001.0 + CLAIM_SECONDS - 1) == []
    assert [e["digest"] for _, e in intake.claim(M, 1001.0 + CLAIM_SECONDS)] == ["d3", "d4"]


def test_events_nobody_handled_for_a_day_are_dropped(intake):
    intake.accept(M, "d0", EVENT, seen_ttl=86400, now=1000.0)
    assert intake.claim(M, 1000.0 + 86400 + 1) == [] and intake.waiting(M) == 0


def test_a_withdrawn_event_is_accepted_again(intake):
    intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0)
    intake.withdraw(M, "d1")  # the broker refused the drain: the web answered 503
    assert intake.waiting(M) == 0
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1060.0) == PUBLISH  # Salla's retry


def test_stores_whose_events_nobody_took_are_found(intake):
    intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0)
    intake.accept(1, "d2", EVENT, seen_ttl=86400, now=1050.0)
    assert intake.stalled([M, 1, 2], 1000.0 + RECOVER_AFTER_SECONDS - 1) == []
    assert intake.stalled([M, 1, 2], 1000.0 + RECOVER_AFTER_SECONDS) == [M]
    intake.claim(M, 1000.0 + RECOVER_AFTER_SECONDS)  # a drain took it: not stalled while leased
    assert intake.stalled([M, 1, 2], 1000.0 + RECOVER_AFTER_SECONDS + 1) == []


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def rt(monkeypatch):
    clock = Clock()
    rt = build_runtime(make_settings(SYNC_DEBOUNCE_SECONDS="0"), fakeredis.FakeRedis(decode_responses=True),
                       requests.Session(), clock=clock)
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    rt.reads = []
    monkeypatch.setattr(tasks, "_send_sync", lambda m, c, pages, lease: rt.reads.append(c))
    monkeypatch.setattr(tasks, "_schedule_pump", lambda m, wait: None)
    rt.published = []
    monkeypatch.setattr(tasks.drain_intake, "apply_async", lambda args: rt.published.append(args[0]))
    return rt


def test_a_drain_handles_a_burst_with_one_pump(rt):
    for n in range(250):  # more than one batch
        rt.intake.accept(M, f"d{n}", dict(EVENT, customer=dict(EVENT["customer"], id=n + 1)), seen_ttl=86400,
                         now=rt.clock())
    assert tasks.drain_intake.run({"merchant_id": M}) == 250
    # All 250 in the store's read queue: as many reads as Salla's budget allows now, the rest waiting.
    assert len(rt.reads) == 120 and rt.budget.waiting(M) == 130 and rt.intake.waiting(M) == 0
    assert rt.profiles.load(M, 3).name == "سارة"
    assert tasks.drain_intake.run({"merchant_id": M}) == 0  # a second drain finds nothing


def test_a_lost_drain_is_recovered_by_beat(rt):
    """The web stored the event and published a drain; the broker lost the message (a worker
    killed between BRPOP and recording it as unacknowledged)."""
    rt.intake.accept(M, "d1", EVENT, seen_ttl=86400, now=rt.clock())
    assert tasks.recover_intake.run() == 0  # not overdue yet
    rt.clock.now += RECOVER_AFTER_SECONDS
    assert tasks.recover_intake.run() == 1
    assert rt.published == [{"merchant_id": M}]  # ids only, nothing personal
    assert tasks.drain_intake.run(rt.published[0]) == 1
    assert rt.reads == [7] and rt.registry.counters(M)["intake_drains_recovered"] == 1
