"""Issue 18 goal 1: a sent reminder's ledger record keeps its state, channels and lot keys, not
its body (rendered again when a replay or an export needs it); records and lots written in the
previous format are still read."""
import json
from datetime import datetime, timedelta, timezone

import fakeredis
import requests

from service.domain.events import Customer
from service.domain import loyalty
from service.domain.loyalty import Lot
from tests.conftest import make_settings
from workers import delivery, reminding
from service.ops import dead_letters, personal_data
from service.ops.fallback import LateFailure, handle_late_failure
from service.ops.runtime import build_runtime

M = 1305146709
C = 5
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
RIYADH = timezone(timedelta(hours=3))


class Recorder:
    def __init__(self, name):
        self.name = name
        self.sent = []

    def send(self, reminder):
        self.sent.append(json.loads(json.dumps(reminder)))


def runtime(server=None):
    store = fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), decode_responses=True)
    return build_runtime(make_settings(QUIET_HOURS="off"), store, requests.Session(), clock=lambda: NOW.timestamp())


def lot(days, points=100):
    return Lot(key=f"lot{days:04d}", name="مخصصة", points=points, used_points=10, status="مؤكدة",
               created_at=(NOW - timedelta(days=200)).astimezone(RIYADH),
               expires_at=(NOW + timedelta(days=days)).astimezone(RIYADH), order_id=str(7000 + days),
               reference_id=None)


def two_sent(rt, channels):
    """A customer with three lots: its stage-7 and stage-30 lots are reminded (in two messages, or
    in one when the engine sends stages due at once together), one lot waits."""
    rt.channels = channels
    customer = Customer(C, "سارة", "+966500000001", "s@x.sa", True, lang="ar")
    rt.profiles.save(M, customer, NOW.timestamp())
    queued = reminding.after_read(rt, M, customer, [lot(3), lot(20), lot(120)], NOW,
                                  lambda m, c, rid: delivery.deliver(rt, m, c, rid, NOW.timestamp()))
    assert 1 <= len(queued) <= 2 and rt.ledger.marks(M, C).sent == {"lot0003": 7, "lot0020": 30}
    return {reminder["reminder_id"]: reminder for reminder in queued}


def test_a_sent_reminder_keeps_its_state_channels_and_lot_keys_not_its_body():
    """Issue 18 goal 1: once sent, keep state, channels, message ids and lot keys, not the body."""
    rt = runtime()
    log = Recorder("log")
    queued = two_sent(rt, [log])
    for rid, reminder in queued.items():
        raw = rt.store.hgetall(rt.keys.store(M).reminder(rid))
        assert "body" not in raw and "merchant_id" not in raw  # the merchant is in the key
        assert raw["state"] == "sent" and raw["ch:log"] == "sent" and raw["customer_id"] == str(C)
        assert raw["l"] == ",".join(lot["key"] for lot in reminder["lots"])
        assert max(len(value) for value in raw.values()) <= 64  # a listpack at Redis's defaults
        record = rt.ledger.get(M, rid)
        view = record.view()
        assert view["points_expiring"] == reminder["points_expiring"] and view["lots"] == 1
        assert view["channels"] == {"log": "sent"} and view["merchant_id"] == M
        assert [lot["key"] for lot in record.reminder["lots"]] == raw["l"].split(",")
    # What went out was the whole reminder, as built.
    assert sorted(r["reminder_id"] for r in log.sent) == sorted(queued)
    assert all(sent == queued[sent["reminder_id"]] for sent in log.sent)


def test_the_export_shows_a_sent_reminder_rendered_again_in_full():
    """Issue 18 goal 1: the personal-data export still shows the full reminder (rendered again
    from the kept lots and profile), the same as what was sent."""
    rt = runtime()
    queued = two_sent(rt, [Recorder("log")])
    exported = personal_data.export(rt.store, rt.settings.redis_key_prefix, M, C)
    bodies = {item["reminder_id"]: item["body"] for item in exported["reminders"]}
    assert bodies == queued
    assert exported["lots"]["lots"][0]["key"] == "lot0003" and exported["lots"]["read_at"] == NOW.timestamp()


def test_a_sent_reminder_that_failed_later_goes_out_in_full_again_and_a_replay_shows_it():
    """Issue 18 goal 1: a sent (compacted) reminder reopened by a late failure is delivered in
    full by the next channel; one that dies is a dead letter whose replay shows the full reminder."""
    rt = runtime()
    first, second = Recorder("whatsapp"), Recorder("sms")
    queued = two_sent(rt, [first, second])
    rid = sorted(queued)[0]
    assert "body" not in rt.store.hgetall(rt.keys.store(M).reminder(rid))
    # `first` policy: the next channel after a late failure of the one that sent.
    first.sent.clear(), second.sent.clear()
    rt.ledger.channel_result(M, rid, "sms", "failed:other: not tried")  # only whatsapp had sent
    result = handle_late_failure(rt.ledger, rt.due, M, rid, "whatsapp", LateFailure("undeliverable", True, "WhatsApp error 131026"),
                                 ["whatsapp", "sms"], "first", NOW.timestamp(), "Asia/Riyadh", None,
                                 lambda *a: None)
    assert result == "dead"  # no channel left: a dead letter
    replayed = dead_letters.replay(rt.ledger, rt.due, M, rid, NOW.timestamp())
    assert replayed
    assert delivery.deliver(rt, M, C, rid, NOW.timestamp()) == "sent"
    assert [sent["reminder_id"] for sent in second.sent] == [rid]
    assert second.sent[0] == queued[rid]  # customer, message, lots: the whole reminder again
    assert "body" not in rt.store.hgetall(rt.keys.store(M).reminder(rid))


def test_a_record_and_lots_in_the_previous_format_are_still_read():
    """Issue 18 goal 1: old records (a deployed Redis has them) are read, delivered, compacted."""
    rt = runtime()
    rt.channels = [Recorder("log")]
    customer = Customer(C, "سارة", "+966500000001", "s@x.sa", True, lang="ar")
    rt.profiles.save(M, customer, NOW.timestamp())
    k = rt.keys.store(M)
    old_lot = {"key": "lot0003", "name": "مخصصة", "points": 100, "used_points": 10, "status": "مؤكدة",
               "created_at": (NOW - timedelta(days=200)).astimezone(RIYADH).isoformat(),
               "expires_at": (NOW + timedelta(days=3)).astimezone(RIYADH).isoformat(), "order_id": "7003",
               "reference_id": None}
    rt.store.set(k.lots(C), json.dumps({"read_at": NOW.timestamp(), "lots": [old_lot]}, ensure_ascii=False))
    read_at, lots = reminding.load_lots(rt, M, C)
    assert read_at == NOW.timestamp() and lots == [lot(3)]
    body = {"reminder_id": "a" * 32, "merchant_id": M, "customer_id": C, "stage_days": 7, "points_expiring": 90,
            "lots": [lot(3).to_dict()], "customer": {"name": "سارة"}, "message": "old"}
    rt.store.hset(k.reminder("a" * 32), mapping={
        "merchant_id": M, "customer_id": C, "stage": 7, "state": "scheduled", "attempts": 0,
        "created_at": "1796494471.609498", "updated_at": "1796494471.609498",
        "body": json.dumps(body, ensure_ascii=False)})
    rt.store.hset(k.marks(C), "p:" + "a" * 32, json.dumps({"stage": 7, "lots": ["lot0003"], "at": 1.0}))
    record = rt.ledger.get(M, "a" * 32)
    assert record.reminder == body and record.view()["points_expiring"] == 90
    exported = personal_data.export(rt.store, rt.settings.redis_key_prefix, M, C)
    assert exported["reminders"][0]["body"] == body and exported["lots"]["lots"] == [old_lot]
    assert delivery.deliver(rt, M, C, "a" * 32, NOW.timestamp()) == "sent"
    assert rt.channels[0].sent == [body]  # the kept body, as it was
    raw = rt.store.hgetall(k.reminder("a" * 32))
    assert "body" not in raw and raw["l"] == "lot0003" and raw["p"] == "90"
    assert rt.ledger.marks(M, C).sent == {"lot0003": 7}


def test_lots_are_kept_in_a_shorter_form():
    """Issue 18 goal 1: the last read's lots take less room than the previous JSON."""
    lots = [lot(3), lot(20), lot(120)]
    new = reminding._lots_json(lots, NOW)
    old = json.dumps({"read_at": NOW.timestamp(), "lots": [loyalty._lot_record(x) for x in lots]},
                     ensure_ascii=False)
    assert len(new.encode()) < 0.6 * len(old.encode())
    assert loyalty._lots_from_json(new) == (NOW.timestamp(), lots)


def test_one_wake_up_waits_per_customer_the_earliest():
    """Issue 18 goal 1 (nothing kept past its use): of the plan's wake-ups only the earliest
    waits in the due set; it plans again and schedules the next."""
    rt = runtime()
    two_sent(rt, [Recorder("log")])
    [entry] = rt.due.customer_entries(M, C)
    # lot0003 was reminded at 7 days: it enters the 1-day stage in two days, before the others.
    assert entry["stage_days"] == 1 and entry["due_at"] == (NOW + timedelta(days=2)).timestamp()


def test_a_reminder_naming_several_stages_keeps_each_stage_short_and_comes_back_whole():
    """Issue 18 goal 1, with stages due at once in one message (`other_stages`, the engine's):
    each stage's lots are marked and counted at their own stage, the body goes once sent, and
    the reminder comes back whole, every stage with its own figures."""
    from service.domain.expiry import StageGroup
    from service.domain.messages import plain_message
    from service.domain.reminders import build_reminder
    from service.state.ledger import full_reminder

    rt = runtime()
    rt.channels = [Recorder("log")]
    customer = Customer(C, "سارة", "+966500000001", "s@x.sa", True, lang="ar")
    rt.profiles.save(M, customer, NOW.timestamp())
    lots = [lot(3), lot(20)]
    reminding.save_lots(rt, M, C, lots, NOW)
    reminder = build_reminder(M, customer, StageGroup(7, [lots[0]]), "ar", NOW, 0.05)
    reminder["other_stages"] = [{"stage_days": 30, "points_expiring": 90, "earliest_expiry": lots[1].expires_at.isoformat(),
                                 "value_sar": 4.5, "lots": [lots[1].to_dict()]}]
    reminder["message"] = plain_message({**reminder, "message": ""})  # the text names every stage it can
    delivery.queue_reminder(rt, reminder, 40 * 86400, NOW.timestamp(), lambda *a: None)
    assert delivery.deliver(rt, M, C, reminder["reminder_id"], NOW.timestamp()) == "sent"
    k = rt.keys.store(M)
    assert rt.ledger.marks(M, C).sent == {"lot0003": 7, "lot0020": 30}
    assert rt.store.hgetall(k.stats) == {"7:reminders_sent": "1", "7:points_reminded": "90",
                                         "30:reminders_sent": "1", "30:points_reminded": "90"}
    raw = rt.store.hgetall(k.reminder(reminder["reminder_id"]))
    assert "body" not in raw and "o" not in raw and raw["o:1"].startswith("30|90|")
    # The expiries as unix seconds in the zone offset `z`; settled in the attempt that sent it,
    # the record's `updated_at` is its `sent_at`.
    assert raw["x"] == str(int(lots[0].expires_at.timestamp())) and raw["z"] == "10800"
    assert raw["o:1"].split("|")[2] == str(int(lots[1].expires_at.timestamp())) and "updated_at" not in raw
    record = rt.ledger.get(M, reminder["reminder_id"])
    assert record.updated_at == record.sent_at == NOW.timestamp()
    assert full_reminder(record, customer, lots) == json.loads(json.dumps(reminder, ensure_ascii=False))
    # Dropped later (a late failure made it a dead letter): every stage's lots get drop marks.
    rt.store.hset(k.reminder(reminder["reminder_id"]), mapping={"state": "dead", "ch:log": "failed:x: late"})
    assert rt.ledger.finish(M, C, reminder["reminder_id"], "dropped", NOW.timestamp())
    assert {f: v for f, v in rt.store.hgetall(k.marks(C)).items() if f.startswith("d:")} == \
        {"d:lot0003": "7", "d:lot0020": "30"}


def test_a_stage_time_in_the_marks_is_whole_seconds_rounded_up():
    """Issue 18 goal 1: the marks' `stage:<S>` times are integers (a listpack keeps them in a few
    bytes), never earlier than the reminder was queued; marks with fractions still read."""
    rt = runtime()
    customer = Customer(C, "سارة", "+966500000001", "s@x.sa", True, lang="ar")
    rt.profiles.save(M, customer, NOW.timestamp())
    now = NOW + timedelta(seconds=0.25)
    reminding.after_read(rt, M, customer, [lot(3), lot(20), lot(120)], now,
                         lambda m, c, rid: delivery.deliver(rt, m, c, rid, now.timestamp()))
    raw = rt.store.hgetall(rt.keys.store(M).marks(C))
    assert {k: v for k, v in raw.items() if k.startswith("stage:")} == {
        "stage:7": str(int(NOW.timestamp()) + 1), "stage:30": str(int(NOW.timestamp()) + 1)}
    rt.store.hset(rt.keys.store(M).marks(C), "stage:7", "1796494471.609498")  # the previous form
    assert rt.ledger.marks(M, C).stage_times[7] == 1796494471.609498


def test_a_sent_records_expiries_come_back_as_the_iso_text_they_were_whatever_the_date_and_zone():
    """Issue 18 goal 1: _SETTLE turns an expiry of the usual ISO form into unix seconds in Lua (a
    civil-date calculation); it must give back the text exactly: leap days, year ends, offsets
    east and west of UTC. Text of another form (fractions of a second, a second zone) stays text."""
    from service.state.ledger import Ledger, full_reminder

    rt = runtime()
    ledger: Ledger = rt.ledger
    k = rt.keys.store(M)
    cases = [("2028-02-29T23:59:59+03:00", "2028-03-01T00:00:00-05:00"),
             ("2026-12-31T23:00:00+00:00", "2027-01-01T00:30:00+00:00"),
             ("2100-03-01T05:06:07+05:30", "1999-12-31T12:00:00+05:30"),
             ("2026-12-08T23:37:47.250000+03:00", "2026-12-25T23:37:47+04:00"),
             ("2026-12-08T23:37:47+03:00", "2026-12-25T23:37:47+04:00")]
    for n, (expiry, other) in enumerate(cases):
        rid = f"{n:032x}"
        body = {"reminder_id": rid, "merchant_id": M, "customer_id": C, "stage_days": 7, "points_expiring": 90,
                "earliest_expiry": expiry, "language": "ar", "value_sar": None, "lots": [{"key": "lot0003"}],
                "other_stages": [{"stage_days": 30, "points_expiring": 5, "earliest_expiry": other,
                                  "value_sar": 0.25, "lots": [{"key": "lot0020"}]}]}
        rt.store.hset(k.reminder(rid), mapping={
            "customer_id": C, "stage": 7, "state": "sending", "attempts": 1, "created_at": "1796494471.609498",
            "updated_at": "1796494471.700", "sent_at": "1796494471.700", "ch:log": "sent",
            "body": json.dumps(body)})
        assert ledger.settle_sent(M, C, rid, 1796494480.5)  # a later attempt: its own updated_at
        raw = rt.store.hgetall(k.reminder(rid))
        assert "body" not in raw and raw["updated_at"] == "1796494480.500", raw
        back = ledger.get(M, rid).reminder
        assert back["earliest_expiry"] == expiry and back["other_stages"][0]["earliest_expiry"] == other, raw
        assert back["other_stages"][0]["value_sar"] == 0.25 and ledger.get(M, rid).updated_at == 1796494480.5
        assert raw["x"].isdigit() == ("." not in expiry)
        assert full_reminder(ledger.get(M, rid), None, [])["other_stages"][0]["lots"] == [{"key": "lot0020"}]


def test_a_sent_record_of_the_previous_short_form_still_reads():
    """Records settled before the expiries became unix seconds: ISO text, `o` always, their
    own `updated_at`."""
    rt = runtime()
    k = rt.keys.store(M)
    rt.store.hset(k.reminder("b" * 32), mapping={
        "customer_id": C, "stage": 7, "state": "sent", "attempts": 1, "created_at": "1796494471.609498",
        "updated_at": "1796494472.000", "sent_at": "1796494471.700", "ch:log": "sent", "l": "lot0003", "p": "90",
        "x": "2026-12-08T23:37:47+03:00", "lg": "ar", "o": "1", "o:1": "30|5|2026-12-25T23:37:47+03:00||lot0020"})
    record = rt.ledger.get(M, "b" * 32)
    assert record.updated_at == 1796494472.0
    assert record.reminder["earliest_expiry"] == "2026-12-08T23:37:47+03:00"
    assert record.reminder["other_stages"] == [{"stage_days": 30, "points_expiring": 5, "value_sar": None,
                                                "earliest_expiry": "2026-12-25T23:37:47+03:00",
                                                "lots": [{"key": "lot0020"}]}]
    exported = personal_data.export(rt.store, rt.settings.redis_key_prefix, M, C)
    assert exported["reminders"][0]["body"]["earliest_expiry"] == "2026-12-08T23:37:47+03:00"
