import json
import logging

import fakeredis
import pytest
import requests
import responses

from service.domain.signatures import sign
from service.clients.channels import DeliveryPermanentError, DeliveryTransientError, LogChannel, WebhookChannel
from tests.conftest import make_settings
from workers.delivery import DELIVERY_LEASE_SECONDS, MAX_ATTEMPTS, deliver, queue_reminder
from service.state.due_set import DueEntry
from service.ops.runtime import build_runtime

RID = "c0ffee00c0ffee00c0ffee00c0ffee00"
REMINDER = {
    "reminder_id": RID, "merchant_id": 1, "customer_id": 2,
    "customer": {"name": "سارة", "mobile": "+966501234567", "email": "s@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-28T12:00:00+03:00",
    "language": "ar", "message": "مرحباً سارة", "lots": [{"key": "a"}], "generated_at": "2026-11-25T12:00:00+00:00",
}
HOOK = "https://merchant.example/reminders"


def test_log_channel_writes_one_structured_line_without_contact_data(caplog):
    with caplog.at_level(logging.INFO, logger="reminders"):
        LogChannel().send(REMINDER)
    [record] = caplog.records
    line = record.lpr_data  # the JSON log line's `data` (service/config/logs.py)
    assert line["reminder_id"] == RID and line["points_expiring"] == 400 and line["stage_days"] == 7
    from service.config.logs import JsonFormatter

    formatted = JsonFormatter("worker").format(record)
    assert json.loads(formatted)["data"] == line
    for personal in ("+966501234567", "s@example.com", "سارة"):
        assert personal not in formatted


@responses.activate
def test_webhook_channel_signs_the_raw_body():
    responses.post(HOOK, status=200)
    WebhookChannel(HOOK, "hook-secret", requests.Session(), timeout=2, clock=lambda: 1_800_000_000.5).send(REMINDER)
    request = responses.calls[0].request
    assert request.headers["X-Reminder-Signature"] == sign(request.body, "hook-secret")
    assert request.headers["X-Reminder-Id"] == RID and request.headers["Idempotency-Key"] == RID
    assert json.loads(request.body) == {**REMINDER, "timestamp": 1_800_000_000}  # the time is signed too


@pytest.mark.parametrize("status, error", [(500, DeliveryTransientError), (429, DeliveryTransientError),
                                           (400, DeliveryPermanentError), (410, DeliveryPermanentError)])
@responses.activate
def test_webhook_channel_failures(status, error):
    responses.post(HOOK, status=status)
    with pytest.raises(error):
        WebhookChannel(HOOK, "s", requests.Session(), timeout=2).send(REMINDER)


@responses.activate
def test_webhook_channel_connection_error_is_transient():
    responses.post(HOOK, body=requests.ConnectionError("refused"))
    with pytest.raises(DeliveryTransientError):
        WebhookChannel(HOOK, "s", requests.Session(), timeout=2).send(REMINDER)


class Recorder:
    def __init__(self, name, failures=()):
        self.name = name
        self.sent = []
        self.failures = list(failures)

    def send(self, reminder):
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(reminder["reminder_id"])


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def rt():
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=Clock())
    rt.channels = [Recorder("log"), Recorder("webhook")]
    return rt


def queue(rt, reminder=REMINDER, publish=None):
    published = []
    state = queue_reminder(rt, reminder, 86400, rt.clock(), publish or (lambda *a: published.append(a)))
    return state, published


def stats(rt):
    return rt.store.hgetall(rt.keys.store(1).stats)


def timers(rt):
    return {entry.reminder_key: when for when, entry in
            ((score, DueEntry.decode(member)) for member, score in
             rt.store.zrange(rt.due.scheduled_key, 0, -1, withscores=True))}


def test_a_reminder_goes_out_once_per_channel_whatever_repeats(rt):
    state, published = queue(rt)
    assert state == "created" and published == [(1, 2, RID)]
    assert queue(rt)[0] == "scheduled"  # the same reminder queued again: one record
    results = [deliver(rt, 1, 2, RID, rt.clock()) for _ in range(5)]
    assert results == ["sent"] * 5
    assert [c.sent for c in rt.channels] == [[RID], [RID]]
    record = rt.ledger.get(1, RID)
    assert record.state == "sent" and record.channels == {"log": "sent", "webhook": "sent"} and record.attempts == 1
    assert stats(rt) == {"7:reminders_sent": "1", "7:points_reminded": "400"}
    assert timers(rt) == {}  # nothing left to watch
    assert queue(rt)[0] == "sent"


def test_lots_count_as_reminded_only_once_a_channel_has_sent(rt):
    queue(rt)
    marks = rt.ledger.marks(1, 2)
    assert marks.sent == {} and marks.named == {"a": 7}  # queued: not reminded, but not queued twice either
    deliver(rt, 1, 2, RID, rt.clock())
    marks = rt.ledger.marks(1, 2)
    assert marks.sent == {"a": 7} and marks.claims == {}


def test_a_transient_failure_comes_back_through_the_timer_and_keeps_what_was_sent(rt):
    log, hook = rt.channels
    hook.failures = [DeliveryTransientError("down")]
    queue(rt)
    assert deliver(rt, 1, 2, RID, rt.clock()) == "retrying"
    record = rt.ledger.get(1, RID)
    assert record.state == "retrying" and record.sent_at  # the log channel sent: reminded, counted once
    assert rt.ledger.marks(1, 2).sent == {"a": 7} and stats(rt)["7:reminders_sent"] == "1"
    assert record.channels["webhook"].startswith("retry:")
    assert len(timers(rt)) == 1  # a timer watches the retry
    rt.clock.now += 10
    assert deliver(rt, 1, 2, RID, rt.clock()) == "sent"
    assert log.sent == [RID] and hook.sent == [RID]
    assert stats(rt)["7:reminders_sent"] == "1"


def test_a_refusal_everywhere_is_a_dead_letter_not_a_reminder(rt):
    rt.channels = [Recorder("webhook", failures=[DeliveryPermanentError("410 gone")])]
    queue(rt)
    assert deliver(rt, 1, 2, RID, rt.clock()) == "dead"
    record = rt.ledger.get(1, RID)
    assert record.state == "dead" and "410 gone" in record.last_error
    assert [r.reminder_id for r in rt.ledger.dead_letters(1)] == [RID]
    assert stats(rt) == {} and rt.ledger.marks(1, 2).sent == {}
    # The stage is not queued again while an operator decides...
    assert rt.ledger.marks(1, 2).named == {"a": 7}
    # ...and a replay delivers it.
    from service.ops import dead_letters
    assert dead_letters.replay(rt.ledger, rt.due, 1, RID, rt.clock())
    assert deliver(rt, 1, 2, RID, rt.clock()) == "sent"
    assert rt.ledger.dead_letters(1) == [] and stats(rt)["7:reminders_sent"] == "1"


def test_retries_used_up_make_a_dead_letter_and_drop_gives_up_on_it(rt):
    rt.channels = [Recorder("webhook", failures=[DeliveryTransientError("503")] * 20)]
    queue(rt)
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        outcomes.append(deliver(rt, 1, 2, RID, rt.clock()))
        rt.clock.now += 3600
    assert outcomes == ["retrying"] * (MAX_ATTEMPTS - 1) + ["dead"]
    assert rt.registry.counters(1)["reminders_dead"] == 1
    from service.ops import dead_letters
    assert dead_letters.drop(rt.ledger, rt.due, 1, RID, rt.clock())
    assert rt.ledger.get(1, RID).state == "dropped" and rt.ledger.dead_letters(1) == []
    marks = rt.ledger.marks(1, 2)
    assert marks.sent == {} and marks.named == {"a": 7}  # handled at its stage, not counted as reminded
    assert not dead_letters.drop(rt.ledger, rt.due, 1, RID, rt.clock())


def test_a_publish_failure_loses_nothing_the_timer_publishes_it(rt):
    def broken(*args):
        raise ConnectionError("broker down")
    state, _ = queue(rt, publish=broken)
    assert state == "created"
    [(key, when)] = timers(rt).items()
    assert when == rt.clock() + DELIVERY_LEASE_SECONDS
    assert rt.ledger.get(1, RID).state == "scheduled" and stats(rt) == {}


def test_a_paused_store_keeps_the_reminder_and_sends_it_after_resuming(rt):
    queue(rt)
    rt.registry.set_config(1, paused=1)
    assert deliver(rt, 1, 2, RID, rt.clock()) == "scheduled"
    assert list(timers(rt).values()) == [rt.clock() + 3600]
    assert [c.sent for c in rt.channels] == [[], []] and stats(rt) == {}
    rt.registry.set_config(1, paused=0)
    assert deliver(rt, 1, 2, RID, rt.clock() + 3600) == "sent"


def test_an_opt_out_since_cancels_the_delivery(rt):
    queue(rt)
    from service.domain.events import Customer
    rt.profiles.save(1, Customer(2, "سارة", None, None, False))
    assert deliver(rt, 1, 2, RID, rt.clock()) == "cancelled"
    assert rt.ledger.marks(1, 2).claims == {} and [c.sent for c in rt.channels] == [[], []]


def test_a_worker_killed_mid_send_another_attempt_waits_for_its_claim_then_takes_over(rt):
    queue(rt)
    rt.channels = [Recorder("webhook")]
    attempt = rt.ledger.begin_attempt(1, RID, rt.clock())
    assert rt.ledger.claim_channel(1, RID, "webhook", attempt, rt.clock()) == "ok"  # ...and the worker dies
    assert deliver(rt, 1, 2, RID, rt.clock() + 1) == "retrying"  # redelivered at once: the claim may be live
    assert rt.channels[0].sent == []
    rt.clock.now += rt.ledger.CLAIM_SECONDS + 1
    assert deliver(rt, 1, 2, RID, rt.clock()) == "sent"
    assert rt.channels[0].sent == [RID]


def test_the_sweep_publishes_deliveries_whose_timer_ran_out(rt):
    """Lost publishes and retries (also of a reminder that reached the shopper on one channel
    while another retries) all come back through the due set."""
    from datetime import datetime, timezone
    from workers import reminding
    log, hook = rt.channels
    hook.failures = [DeliveryTransientError("503")]
    published = []
    publish = lambda m, c, rid: published.append(rid)  # noqa: E731
    queue(rt, publish=lambda *a: (_ for _ in ()).throw(ConnectionError("broker down")))
    rt.clock.now += DELIVERY_LEASE_SECONDS
    reminding.sweep(rt, datetime.fromtimestamp(rt.clock(), timezone.utc), publish, lambda m, c: None)
    assert published == [RID]  # the lost publish, found by its timer
    assert deliver(rt, 1, 2, RID, rt.clock()) == "retrying"  # log sent, webhook 503
    rt.clock.now += 5
    reminding.sweep(rt, datetime.fromtimestamp(rt.clock(), timezone.utc), publish, lambda m, c: None)
    assert published == [RID, RID]
    assert deliver(rt, 1, 2, RID, rt.clock()) == "sent"
    assert log.sent == [RID] and hook.sent == [RID] and timers(rt) == {}
