"""Stages due for one customer at the same moment go out as one message (issue 15 item 15).

The message names the nearest expiry first and the other stages after it, in every channel and
both languages; the ledger still records each stage as reminded (its lots at their own stage,
counted per stage), so dedupe per stage and outcome accounting are unchanged.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import pytest
import requests
import responses

from service.domain.events import Customer
from service.domain.expiry import StageGroup
from service.domain.loyalty import Lot
from service.domain.messages import Renderer, whatsapp_parameters
from service.domain.reminders import build_reminder
from tests.conftest import make_settings
from service.clients.channels import WebhookChannel
from workers.delivery import deliver
from service.ops.dead_letters import drop
from service.state.ledger import DEAD, parse_marks
from service.clients.providers.email import EmailChannel
from service.clients.providers.sms import SmsChannel
from workers.reminding import after_read
from service.ops.runtime import build_runtime

RIYADH = ZoneInfo("Asia/Riyadh")
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=RIYADH)
M, C = 1, 1003


def lot(key: str, days: float, points: int) -> Lot:
    return Lot(key=key, name="", points=points, used_points=0, status="مؤكدة", created_at=NOON - timedelta(days=300),
               expires_at=NOON + timedelta(days=days), order_id=None, reference_id=None)


# `make demo`'s customer 1003: 25 points in the 7-day stage, 80 (35 + 45) in the 30-day stage.
LOTS = [lot("week", 6, 25), lot("month-a", 25, 35), lot("month-b", 29, 45)]
CUSTOMER = Customer(C, "سارة", "+966500000003", "sara@example.com", None)


class Clock:
    def __init__(self):
        self.now = NOON.timestamp()

    def __call__(self):
        return self.now


@pytest.fixture
def rt():
    clock = Clock()
    runtime = build_runtime(make_settings(QUIET_HOURS="off"), fakeredis.FakeRedis(decode_responses=True),
                            requests.Session(), clock=clock)
    runtime.sent = []

    class Channel:
        name = "webhook"

        def send(self, reminder):
            runtime.sent.append(reminder)

    runtime.channels = [Channel()]
    return runtime


def read(rt, lots=LOTS):
    published = []
    after_read(rt, M, CUSTOMER, lots, datetime.fromtimestamp(rt.clock(), timezone.utc),
               lambda m, c, rid: published.append(rid))
    return published


def test_two_stages_due_at_once_are_one_message_and_each_stage_is_recorded(rt):
    """Issue 15 item 15: customer 1003 of `make demo` (7-day: 25 points, 30-day: 80 points, both
    due on the first read) gets one message naming both, nearest expiry first; the ledger marks
    each stage's lots at their own stage and counts each stage as reminded."""
    published = read(rt)
    assert len(published) == 1
    deliver(rt, M, C, published[0], rt.clock())
    [message] = rt.sent
    assert (message["stage_days"], message["points_expiring"], [l["key"] for l in message["lots"]]) == (7, 25, ["week"])
    [other] = message["other_stages"]
    assert (other["stage_days"], other["points_expiring"]) == (30, 80)
    assert [l["key"] for l in other["lots"]] == ["month-a", "month-b"]
    assert other["earliest_expiry"] == (NOON + timedelta(days=25)).isoformat()

    marks = rt.ledger.marks(M, C)
    assert marks.sent == {"week": 7, "month-a": 30, "month-b": 30}
    assert set(marks.stage_times) == {7, 30} and marks.claims == {}
    stats = rt.store.hgetall(rt.keys.store(M).stats)
    assert (stats["7:reminders_sent"], stats["7:points_reminded"]) == ("1", "25")
    assert (stats["30:reminders_sent"], stats["30:points_reminded"]) == ("1", "80")
    # Dedupe per stage unchanged: the next read queues nothing, and the 30-day lots still get
    # their 7-day reminder when they enter that stage.
    assert read(rt) == []
    rt.clock.now = (NOON + timedelta(days=18, hours=12)).timestamp()
    later = read(rt)
    deliver(rt, M, C, later[0], rt.clock())
    assert (rt.sent[-1]["stage_days"], [l["key"] for l in rt.sent[-1]["lots"]]) == (7, ["month-a"])
    assert rt.sent[-1]["other_stages"] == []


def test_a_combined_reminder_on_its_way_holds_every_stage_and_a_drop_marks_each(rt):
    """Issue 15 item 15: while the combined reminder waits (a dead letter here), neither stage is
    queued again; dropped, each stage's lots are marked dropped at their own stage."""
    [rid] = read(rt)
    claim = rt.ledger.marks(M, C).claims[rid]
    assert claim["stage"] == 7 and claim["other_stages"] == [{"stage": 30, "lots": ["month-a", "month-b"]}]
    rt.ledger.finish(M, C, rid, DEAD, rt.clock(), error="refused")
    assert read(rt) == []
    assert drop(rt.ledger, rt.due, M, rid, rt.clock())
    raw = rt.store.hgetall(rt.keys.store(M).marks(C))
    assert {k: v for k, v in raw.items() if k.startswith("d:")} == {"d:week": "7", "d:month-a": "30", "d:month-b": "30"}
    assert parse_marks(raw).named == {"week": 7, "month-a": 30, "month-b": 30}


def combined(language: str, value: float = 0.0) -> dict:
    groups = [StageGroup(7, (LOTS[0],)), StageGroup(30, tuple(LOTS[1:]))]
    return build_reminder(M, CUSTOMER, groups[0], language, NOON, value, "متجر الورد", others=groups[1:])


@pytest.mark.parametrize("language, first, second, total", [
    ("ar", ["25 نقطة", "1 ديسمبر 2026"], ["80 نقطة", "20 ديسمبر 2026"], "105 نقطة"),
    ("en", ["25 points", "1 December 2026"], ["80 points", "20 December 2026"], "105 points"),
])
@responses.activate
def test_every_channel_says_both_stages_nearest_first(language, first, second, total):
    """Issue 15 item 15: SMS, WhatsApp parameters, e-mail text and HTML and the webhook's message
    name the nearest expiry first, then the other stage with its date, and the total."""
    reminder = combined(language)
    renderer = Renderer()
    sms = SmsChannel(M, {"provider": "unifonic", "api_url": "https://sms.example", "api_key": "k", "sender": "S",
                         "max_segments": 3}, requests.Session(), 2, renderer, "متجر الورد").text(reminder)
    email = EmailChannel(M, {"smtp_url": "smtp://127.0.0.1:1", "from": "s@store.example"}, 2, renderer,
                         "متجر الورد", lambda r: "https://u.example/x").message(reminder)
    texts = {"sms": sms, "whatsapp": " ".join(whatsapp_parameters(reminder, "متجر الورد")),
             "email_text": email.get_body(("plain",)).get_content(), "webhook_message": reminder["message"],
             "email_html": email.get_body(("html",)).get_content().replace('<span dir="ltr">', "").replace("</span>", "")}
    for channel, text in texts.items():
        text = text.replace("\u200f", "")
        places = [text.find(part) for part in first + second + [total]]
        assert -1 not in places, (channel, text)
        assert places[0] < places[2] and places[1] < places[3], (channel, text)  # the nearest first
    assert len(whatsapp_parameters(reminder, "")) == 5  # the approved template's count, unchanged


@responses.activate
def test_the_webhook_keeps_its_fields_and_adds_the_other_stages_as_a_list():
    """Issue 15 item 15: the merchant's webhook body keeps every field of a one-stage reminder
    (the nearest stage's) and lists the other stages, each with its points, expiry, value, lots."""
    responses.post("https://merchant.example/hook", status=200)
    reminder = combined("ar", value=0.5)
    WebhookChannel("https://merchant.example/hook", "s", requests.Session(), 2).send(reminder)
    body = json.loads(responses.calls[0].request.body)
    single = build_reminder(M, CUSTOMER, StageGroup(7, (LOTS[0],)), "ar", NOON, 0.5, "متجر الورد")
    assert set(single) <= set(body)
    assert (body["stage_days"], body["points_expiring"], body["value_sar"]) == (7, 25, 12.5)
    assert body["reminder_id"] != single["reminder_id"]  # another message than the 7-day stage alone
    [other] = body["other_stages"]
    assert {k: other[k] for k in ("stage_days", "points_expiring", "value_sar")} == \
        {"stage_days": 30, "points_expiring": 80, "value_sar": 40.0}
    assert [lot["remaining_points"] for lot in other["lots"]] == [35, 45]


def test_the_preview_from_the_last_read_shows_every_stage_in_one_message(rt):
    """Issue 15 item 15: `preview` of a customer known only by a read shows what the engine sends:
    one message naming both stages."""
    from service.clients.channels import ChannelDirectory
    from service.ops.preview import preview
    from workers.reminding import save_lots

    save_lots(rt, M, C, LOTS, NOON)
    directory = ChannelDirectory(rt.settings, rt.store, requests.Session(), rt.registry)
    shown = preview(rt.store, rt.settings, directory, M, C, channel="log", now=NOON)
    assert shown["source"] == "last read"
    line = json.loads(shown["channels"]["log"]["line"].removeprefix("reminder "))
    assert (line["stage_days"], line["points_expiring"]) == (7, 25)
    reminder_id = shown["reminder_id"]
    assert reminder_id == combined("ar")["reminder_id"]  # the very message the engine would queue


def test_a_store_template_is_checked_with_other_stages_too():
    """Issue 15 item 15: an override is tried at save time on a message naming two stages too, so
    one that breaks only on `others` is refused there, not at send time."""
    from service.domain.messages import TemplateProblem, check_template

    check_template("sms.en.txt", "{{ points_text }}{% for o in others %}, {{ o.points_text }} on {{ o.expiry }}{% endfor %}")
    with pytest.raises(TemplateProblem, match="sms.en.txt"):
        check_template("sms.en.txt", "{{ points_text }}{% for o in others %}{{ o.no_such_field }}{% endfor %}")
