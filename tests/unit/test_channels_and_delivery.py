import json
import logging

import fakeredis
import pytest
import requests
import responses

from service.signatures import sign
from workers.channels import (DeliveryPermanentError, DeliveryTransientError, LogChannel, WebhookChannel,
                              build_channels)
from workers.delivery import deliver, sent_key
from tests.conftest import make_settings

REMINDER = {
    "reminder_id": "r1", "merchant_id": 1, "customer_id": 2,
    "customer": {"name": "سارة", "mobile": "+966501234567", "email": "s@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-28T12:00:00+03:00",
    "language": "ar", "message": "مرحباً سارة", "lots": [{"key": "a"}], "generated_at": "2026-11-25T12:00:00+00:00",
}
HOOK = "https://merchant.example/reminders"


def test_log_channel_writes_one_structured_line_without_contact_data(caplog):
    with caplog.at_level(logging.INFO, logger="reminders"):
        LogChannel().send(REMINDER)
    [record] = caplog.records
    line = json.loads(record.getMessage().split(" ", 1)[1])
    assert line["reminder_id"] == "r1" and line["points_expiring"] == 400 and line["stage_days"] == 7
    for personal in ("+966501234567", "s@example.com", "سارة"):
        assert personal not in record.getMessage()


@responses.activate
def test_webhook_channel_signs_the_raw_body():
    responses.post(HOOK, status=200)
    WebhookChannel(HOOK, "hook-secret", requests.Session(), timeout=2).send(REMINDER)
    request = responses.calls[0].request
    assert request.headers["X-Reminder-Signature"] == sign(request.body, "hook-secret")
    assert request.headers["X-Reminder-Id"] == "r1"
    assert json.loads(request.body) == REMINDER


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


def test_build_channels_from_settings():
    settings = make_settings(REMINDER_CHANNELS="log,webhook", REMINDER_WEBHOOK_URL=HOOK, REMINDER_WEBHOOK_SECRET="s")
    assert [c.name for c in build_channels(settings, requests.Session())] == ["log", "webhook"]


class Recorder:
    def __init__(self, name, failures=()):
        self.name = name
        self.sent = []
        self.failures = list(failures)

    def send(self, reminder):
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(reminder["reminder_id"])


@pytest.fixture
def store():
    return fakeredis.FakeRedis(decode_responses=True)


def test_a_reminder_goes_out_once_per_channel_whatever_repeats(store):
    log, hook = Recorder("log"), Recorder("webhook")
    reports = [deliver(REMINDER, [log, hook], store, "t:", keep_seconds=86400) for _ in range(5)]
    assert log.sent == ["r1"] and hook.sent == ["r1"]
    assert reports[0].sent == ["log", "webhook"]
    assert all(r.already_sent == ["log", "webhook"] for r in reports[1:])
    assert store.get(sent_key("t:", "r1", "webhook")) == "sent"
    assert 86000 < store.ttl(sent_key("t:", "r1", "webhook")) <= 86400


def test_a_transient_failure_releases_the_claim_and_keeps_what_was_sent(store):
    log, hook = Recorder("log"), Recorder("webhook", failures=[DeliveryTransientError("down")])
    with pytest.raises(DeliveryTransientError):
        deliver(REMINDER, [log, hook], store, "t:", keep_seconds=86400)
    assert store.get(sent_key("t:", "r1", "webhook")) is None
    report = deliver(REMINDER, [log, hook], store, "t:", keep_seconds=86400)  # the task's retry
    assert report.sent == ["webhook"] and report.already_sent == ["log"]
    assert log.sent == ["r1"] and hook.sent == ["r1"]


def test_a_permanent_refusal_is_recorded_not_raised(store, caplog):
    hook = Recorder("webhook", failures=[DeliveryPermanentError("410")])
    report = deliver(REMINDER, [hook], store, "t:", keep_seconds=86400)
    assert report.refused == ["webhook"] and hook.sent == []
    assert "refused by webhook" in caplog.text
    assert deliver(REMINDER, [hook], store, "t:", keep_seconds=86400).sent == ["webhook"]


def test_a_lot_reminded_at_a_stage_is_not_reminded_again_at_that_stage(store):
    from types import SimpleNamespace
    from service.schedule import new_lots
    from workers.delivery import mark_reminded, reminded_key
    a, b, c = (SimpleNamespace(key=k) for k in "abc")
    mark_reminded(store, "t:", dict(REMINDER, lots=[{"key": "a"}, {"key": "b"}]), keep_seconds=86400, now=1000.0)
    marks = {k: int(v) for k, v in store.hgetall(reminded_key("t:", 1, 2)).items() if not k.startswith("stage:")}
    group = lambda lots, stage: SimpleNamespace(lots=lots, stage_days=stage)
    assert new_lots(group([a, b], 7), marks) == []
    assert new_lots(group([b], 7), marks) == []            # a was used up: nothing new
    assert new_lots(group([a, b, c], 7), marks) == [c]     # a new lot entered the stage
    assert new_lots(group([a, b], 1), marks) == [a, b]     # the nearer stage is new
    assert new_lots(group([a], 30), marks) == []           # never back to a farther one
    assert store.hget(reminded_key("t:", 1, 2), "stage:7") == "1000"
    assert 86000 < store.ttl(reminded_key("t:", 1, 2)) <= 86400
