"""Accepted webhooks wait in their store's inbox until handled; beat hands lost ones out again."""
import fakeredis
import pytest
import requests

from service.intake import RECOVER_AFTER_SECONDS, Intake
from tests.conftest import make_settings
from workers import tasks
from workers.runtime import build_runtime

M = 1305146709
EVENT = {"event": "order.created", "merchant_id": M, "event_created_at": "", "received_at": "",
         "customer": {"id": 7, "name": "سارة", "mobile": "+966500000001", "email": None,
                      "notifications_enabled": None}}


@pytest.fixture
def intake():
    return Intake(fakeredis.FakeRedis(decode_responses=True), "t:")


def test_an_event_is_kept_until_handled_and_a_repeat_is_refused(intake):
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0)
    assert not intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1001.0)  # the same bytes again
    assert intake.load(M, "d1") == EVENT and intake.waiting(M) == 1
    intake.done(M, "d1")
    assert intake.load(M, "d1") is None and intake.waiting(M) == 0
    assert not intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1002.0)  # still a repeat for a day


def test_a_withdrawn_event_is_accepted_again(intake):
    intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0)
    intake.withdraw(M, "d1")  # the broker refused it: the web answered 503
    assert intake.waiting(M) == 0
    assert intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1060.0)  # Salla's retry


def test_overdue_events_are_handed_out_again_once_per_look(intake):
    intake.accept(M, "d1", EVENT, seen_ttl=86400, now=1000.0)
    assert intake.overdue(M, 1000.0 + RECOVER_AFTER_SECONDS - 1) == []
    assert intake.overdue(M, 1000.0 + RECOVER_AFTER_SECONDS) == ["d1"]
    assert intake.overdue(M, 1000.0 + RECOVER_AFTER_SECONDS + 5) == []  # just handed out
    assert intake.overdue(M, 1000.0 + 2 * RECOVER_AFTER_SECONDS) == ["d1"]


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


def test_a_lost_message_is_recovered_and_handled_once(monkeypatch):
    """The web stored the event; the broker's message was lost (a worker killed between BRPOP
    and recording it as unacknowledged). Beat's recover_intake hands it out again."""
    clock = Clock()
    rt = build_runtime(make_settings(SYNC_DEBOUNCE_SECONDS="0"), fakeredis.FakeRedis(decode_responses=True),
                       requests.Session(), clock=clock)
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    reads = []
    monkeypatch.setattr(tasks, "_send_sync", lambda m, c, pages, lease: reads.append(c))
    monkeypatch.setattr(tasks, "_schedule_pump", lambda m, wait: None)
    published = []
    monkeypatch.setattr(tasks.handle_event, "apply_async", lambda args: published.append(args[0]))
    rt.intake.accept(M, "d1", EVENT, seen_ttl=86400, now=clock())
    assert tasks.recover_intake.run() == 0  # not overdue yet
    clock.now += RECOVER_AFTER_SECONDS
    assert tasks.recover_intake.run() == 1
    assert published == [{"merchant_id": M, "intake_id": "d1"}]  # ids only, nothing personal
    assert tasks.handle_event.run(published[0]) == "queued"
    assert reads == [7] and rt.intake.waiting(M) == 0
    assert tasks.handle_event.run(published[0]) == "already_handled"  # the original shows up late
    assert reads == [7] and rt.registry.counters(M)["events_recovered"] == 1
