"""A late failure (accepted, then reported failed) moves a reminder on to the next channel:
the pure decision, the provider codes, the ledger and the delivery loop (fakeredis), the callbacks."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from devkit.providers import WhatsAppFake
from service.state.channel_settings import ChannelSettings
from service.domain.unsubscribe import dlr_url
from tests.conftest import TOKEN_KEY
from tests.unit.test_shopper_channels import (C, M, RID, WA, Fake, queue, rt, web,  # noqa: F401 (fixtures)
                                              with_channels)
from service.ops import dead_letters
from workers.delivery import deliver
from service.ops.fallback import (DEAD, MOVE_ON, NONE, RECORD, LateFailure, classify_sms, classify_whatsapp, decide,
                              handle_late_failure, reopen_at)
from service.state.ledger import Record

UNDELIVERABLE = LateFailure("undeliverable", True, "WhatsApp error 131026")
ORDER = ["whatsapp", "sms", "email"]
SMS = {"provider": "unifonic", "api_url": "https://sms.example", "api_key": "k" * 12, "sender": "Store"}


def record(channels, statuses=None, state="sent") -> Record:
    return Record(reminder_id=RID, merchant_id=M, customer_id=C, stage=7, state=state, attempts=1, last_error="",
                  created_at=0, updated_at=0, sent_at=1.0, channels=channels, body="{}",
                  statuses={k: {"status": v, "at": ""} for k, v in (statuses or {}).items()})


# -- the decision (pure) -------------------------------------------------------------------------
def test_first_moves_on_to_the_next_untried_channel():
    decision = decide(record({"whatsapp": "sent"}), ORDER, "first", "whatsapp", UNDELIVERABLE)
    assert (decision.action, decision.next_channel) == (MOVE_ON, "sms")
    # sms refused at once earlier (no mobile...): on to e-mail
    decision = decide(record({"sms": "failed:no_address: x", "whatsapp": "sent"}), ["sms", "whatsapp", "email"],
                      "first", "whatsapp", UNDELIVERABLE)
    assert (decision.action, decision.next_channel) == (MOVE_ON, "email")


def test_the_same_failure_twice_moves_on_once():
    after = record({"whatsapp": "failed:undeliverable: WhatsApp error 131026"}, state="scheduled")
    assert decide(after, ORDER, "first", "whatsapp", UNDELIVERABLE).action == NONE


def test_a_failure_after_delivered_or_read_is_kept():
    for status in ("delivered", "read"):
        assert decide(record({"whatsapp": "sent"}, {"whatsapp": status}), ORDER, "first", "whatsapp",
                      UNDELIVERABLE).action == NONE
    # ... but after `sent` (the provider's word) it moves on
    assert decide(record({"whatsapp": "sent"}, {"whatsapp": "sent"}), ORDER, "first", "whatsapp",
                  UNDELIVERABLE).action == MOVE_ON


def test_policy_all_never_moves_on():
    both = record({"whatsapp": "sent", "sms": "sent"})
    assert decide(both, ORDER, "all", "whatsapp", UNDELIVERABLE).action == RECORD
    # all tried, all others failed: the late failure makes it a dead letter, not a new send
    alone = record({"whatsapp": "sent", "sms": "failed:refused: x", "email": "failed:no_address: y"})
    assert decide(alone, ORDER, "all", "whatsapp", UNDELIVERABLE).action == DEAD


def test_no_channel_left_is_a_dead_letter():
    last = record({"whatsapp": "failed:undeliverable: a", "sms": "failed:undeliverable: b", "email": "sent"})
    decision = decide(last, ORDER, "first", "email", UNDELIVERABLE)
    assert decision.action == DEAD and decision.next_channel is None


def test_no_move_when_another_channel_reached_them_or_is_on_its_way_or_it_is_over():
    assert decide(record({"whatsapp": "sent", "sms": "sent"}), ORDER, "first", "whatsapp",
                  UNDELIVERABLE).action == RECORD
    in_flight = record({"whatsapp": "sent", "sms": "retry:DeliveryTransientError: 503", "email": "failed:x: y"},
                       state="retrying")
    assert decide(in_flight, ORDER, "first", "whatsapp", UNDELIVERABLE).action == RECORD
    for state in ("cancelled", "dropped", "dead"):
        assert decide(record({"whatsapp": "sent"}, state=state), ORDER, "first", "whatsapp",
                      UNDELIVERABLE).action == NONE
    assert decide(None, ORDER, "first", "whatsapp", UNDELIVERABLE).action == NONE
    assert decide(record({"sms": "sent"}), ORDER, "first", "whatsapp", UNDELIVERABLE).action == NONE  # not its send


def test_a_channel_the_store_removed_since_moves_on_to_the_first_untried():
    decision = decide(record({"whatsapp": "sent"}), ["sms", "email"], "first", "whatsapp", UNDELIVERABLE)
    assert (decision.action, decision.next_channel) == (MOVE_ON, "sms")


def test_a_failure_that_does_not_move_on():
    opted_out = classify_whatsapp([{"code": 131050}])
    assert (opted_out.reason, opted_out.moves_on) == ("opted_out", False)
    assert decide(record({"whatsapp": "sent"}), ORDER, "first", "whatsapp", opted_out).action == NONE


@pytest.mark.parametrize("code, reason", [
    (131026, "undeliverable"), (100, "setup"), (131049, "refused"), (131047, "refused"),
    (130472, "refused"), (131000, "refused"), (130429, "rate_limited"), (131056, "rate_limited"),
    (131048, "rate_limited"), (132015, "template"), (132001, "template"), (999999, "refused"), ("x", "refused")])
def test_whatsapp_codes_that_move_on(code, reason):
    failure = classify_whatsapp([{"code": code, "title": "t"}])
    assert (failure.reason, failure.moves_on) == (reason, True)
    assert classify_whatsapp(None).moves_on and classify_whatsapp([]).reason == "refused"


def test_sms_report_words():
    for word, reason in [("failed", "undeliverable"), ("undeliverable", "undeliverable"), ("expired", "undeliverable"),
                         ("undeliv", "undeliverable"), ("rejected", "refused"), ("rejectd", "refused")]:
        assert classify_sms(word) == LateFailure(reason, True, f"SMS report {word}")
    assert classify_sms("delivered") is None and classify_sms("") is None


def test_reopen_waits_for_the_end_of_quiet_hours():
    from service.domain.send_window import parse_quiet_hours
    quiet = parse_quiet_hours("21:00-09:00")
    at_11_riyadh = 1_800_000_000.0  # 2027-01-15 08:00 UTC
    far = {"earliest_expiry": "2027-02-01T00:00:00+03:00"}
    assert reopen_at(at_11_riyadh, far, "Asia/Riyadh", quiet) == at_11_riyadh
    at_22_riyadh = at_11_riyadh + 11 * 3600
    assert reopen_at(at_22_riyadh, far, "Asia/Riyadh", quiet) == at_11_riyadh + 22 * 3600  # 09:00 next morning
    soon = {"earliest_expiry": "2027-01-16T02:00:00+03:00"}  # expires before 09:00: at expiry - 30 min
    assert reopen_at(at_22_riyadh, soon, "Asia/Riyadh", quiet) == at_11_riyadh + 14.5 * 3600  # 22:30 UTC
    assert reopen_at(at_22_riyadh, {}, "Asia/Riyadh", None) == at_22_riyadh


# -- ledger + delivery loop (fakeredis) ---------------------------------------------------------
def late(rt, channel="whatsapp", failure=UNDELIVERABLE, policy="first", order=ORDER, published=None):
    sink = published if published is not None else []
    return handle_late_failure(rt.ledger, rt.due, M, RID, channel, failure, order, policy, rt.clock(),
                               rt.settings.store_timezone, None, lambda *a: sink.append(a))


def counters(rt):
    return rt.registry.counters(M)


def timer_score(rt):
    found = rt.store.zrange(rt.due.scheduled_key, 0, -1, withscores=True)
    return found[0][1] if found else None


def test_whatsapp_accepted_then_failed_goes_on_to_sms_once(rt):  # noqa: F811
    wa, sms, email = with_channels(rt, "first", Fake("whatsapp", message_id="wamid.1"), Fake("sms", message_id="9"),
                                   Fake("email"))
    queue(rt)
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert timer_score(rt) is None and rt.ledger.marks(M, C).claims == {}
    published = []
    assert late(rt, published=published) == "moved_on"
    assert published == [(M, C, RID)] and timer_score(rt) == rt.clock()  # published, and watched by the sweep
    record = rt.ledger.get(M, RID)
    assert record.state == "scheduled" and record.attempts == 0
    assert record.channels["whatsapp"].startswith("failed:undeliverable: WhatsApp error 131026")
    assert RID in rt.ledger.marks(M, C).claims  # the sweep finds it from its timer
    assert late(rt) == "none"  # the same failure again: nothing more
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"  # a repeated publish sends nothing
    assert (wa.sent, sms.sent, email.sent) == ([RID], [RID], [])
    assert counters(rt)["fallbacks_after_failure"] == 1 and counters(rt)["reminders_sent"] == 1
    assert rt.store.hget(rt.keys.store(M).stats, "7:reminders_sent") == "1"
    assert rt.ledger.get(M, RID).state == "sent" and timer_score(rt) is None


def test_failed_after_delivered_and_policy_all_do_not_move_on(rt):  # noqa: F811
    wa, sms = with_channels(rt, "first", Fake("whatsapp", message_id="wamid.1"), Fake("sms"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    rt.ledger.record_status(M, RID, "whatsapp", "delivered")
    assert late(rt) == "none"
    assert rt.ledger.get(M, RID).state == "sent" and sms.sent == []
    # The ledger checks it again itself (a delivered that raced the decision).
    assert rt.ledger.late_failure(M, RID, "whatsapp", "failed:x: y", "move_on", rt.clock(), "{}", "e") == "kept"


def test_policy_all_records_the_late_failure_and_sends_nothing_more(rt):  # noqa: F811
    wa, sms = with_channels(rt, "all", Fake("whatsapp", message_id="wamid.1"), Fake("sms"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    assert late(rt, policy="all", order=["whatsapp", "sms"]) == "recorded"
    assert rt.ledger.get(M, RID).state == "sent" and (wa.sent, sms.sent) == ([RID], [RID])
    assert "fallbacks_after_failure" not in counters(rt)


def test_every_channel_failing_late_ends_a_dead_letter_that_can_be_replayed_or_dropped(rt):  # noqa: F811
    wa, sms, email = with_channels(rt, "first", Fake("whatsapp"), Fake("sms"), Fake("email"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    for channel in ("whatsapp", "sms"):
        assert late(rt, channel) == "moved_on"
        assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert late(rt, "email") == "dead"
    record = rt.ledger.get(M, RID)
    assert record.state == "dead" and [r.reminder_id for r in rt.ledger.dead_letters(M)] == [RID]
    assert "email failed after" not in record.last_error and "every channel failed" in record.last_error
    assert counters(rt)["reminders_dead"] == 1 and counters(rt)["reminders_sent"] == 1
    assert counters(rt)["fallbacks_after_failure"] == 2
    # An operator replays it: every channel again, still counted once as sent.
    assert dead_letters.replay(rt.ledger, rt.due, M, RID, rt.clock())
    assert deliver(rt, M, C, RID, rt.clock()) == "sent" and wa.sent == [RID, RID]
    assert counters(rt)["reminders_sent"] == 1
    assert late(rt, "whatsapp") == "moved_on"  # and once more, down the list
    deliver(rt, M, C, RID, rt.clock())
    late(rt, "sms")
    deliver(rt, M, C, RID, rt.clock())
    assert late(rt, "email") == "dead"
    assert dead_letters.drop(rt.ledger, rt.due, M, RID, rt.clock()) and rt.ledger.get(M, RID).state == "dropped"


def test_a_late_failure_while_the_attempt_runs_is_not_lost(rt):  # noqa: F811
    wa, sms = with_channels(rt, "first", Fake("whatsapp"), Fake("sms"))
    queue(rt)
    settle = rt.ledger.settle_sent

    def failure_arrives_first(*args):  # the webhook lands between the send and the settle
        assert late(rt, order=["whatsapp", "sms"]) == "moved_on"
        return settle(*args)
    rt.ledger.settle_sent = failure_arrives_first
    assert deliver(rt, M, C, RID, rt.clock()) == "reopened"
    rt.ledger.settle_sent = settle
    assert rt.ledger.get(M, RID).state == "sending" and timer_score(rt) == rt.clock()
    assert deliver(rt, M, C, RID, rt.clock()) == "sent" and sms.sent == [RID]


def test_quiet_hours_hold_the_fallback_until_the_window_opens(rt):  # noqa: F811
    from service.domain.send_window import parse_quiet_hours
    wa, sms = with_channels(rt, "first", Fake("whatsapp"), Fake("sms"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    rt.clock.now += 11 * 3600  # 22:00 in Riyadh
    published = []
    result = handle_late_failure(rt.ledger, rt.due, M, RID, "whatsapp", UNDELIVERABLE, ORDER, "first", rt.clock(),
                                 "Asia/Riyadh", parse_quiet_hours("21:00-09:00"), lambda *a: published.append(a))
    assert result == "moved_on" and published == []  # nothing goes out tonight
    assert timer_score(rt) == rt.clock() + 11 * 3600  # the sweep publishes it at 09:00


# -- the callbacks ------------------------------------------------------------------------------
def signed(body: bytes, secret=b"app-secret-1") -> dict:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


def test_whatsapp_failed_webhook_moves_on_once_and_not_after_delivered(web):  # noqa: F811
    client, rt = web
    ChannelSettings(rt.store, "lpr:", rt.settings).update(M, {"channels": ["whatsapp", "log"], "policy": "first",
                                                               "whatsapp": WA})
    wa, log = with_channels(rt, "first", Fake("whatsapp", message_id="wamid.X"), Fake("log"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    fake = WhatsAppFake(app_secret="app-secret-1")
    fake.messages.append({"id": "wamid.X", "body": {"to": "966501234567", "biz_opaque_callback_data": f"{M}:{RID}"}})
    # Meta does not promise biz_opaque_callback_data on `failed` (the fake follows it); this test
    # is about moving on, so the status names its reminder as a sent one would.
    body = fake.status_payload([("wamid.X", "failed")], error_code=131049, opaque_on_failed=True)
    for _ in range(2):  # the same webhook twice
        assert client.post("/channels/whatsapp/status", data=body, headers=signed(body)).get_json() == \
            {"applied": 1, "unknown": 0}
    record = rt.ledger.get(M, RID)
    assert record.state == "scheduled" and record.channels["whatsapp"].startswith("failed:refused: WhatsApp error 131049")
    assert rt.registry.counters(M)["fallbacks_after_failure"] == 1
    assert timer_score(rt) is not None  # the web has no broker here: the sweep publishes it
    assert deliver(rt, M, C, RID, rt.clock()) == "sent" and log.sent == [RID] and wa.sent == [RID]
    sent = fake.status_payload([("wamid.X", "sent")])
    client.post("/channels/whatsapp/status", data=sent, headers=signed(sent))  # late `sent`: changes nothing
    assert rt.ledger.get(M, RID).state == "sent"


def _sent_by_sms(rt):
    """A store on [sms, log] under `first`; the reminder sent by SMS (message id 3000). Returns
    the log channel's fake and the store's delivery-report path."""
    ChannelSettings(rt.store, "lpr:", rt.settings).update(M, {"channels": ["sms", "log"], "policy": "first",
                                                               "sms": SMS})
    _, log = with_channels(rt, "first", Fake("sms", message_id="3000"), Fake("log"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    return log, dlr_url("http://x", (TOKEN_KEY,), M).replace("http://x", "")


def test_sms_failed_report_moves_on_and_a_report_after_delivered_does_not(web):  # noqa: F811
    client, rt = web
    log, url = _sent_by_sms(rt)
    assert client.post(url, json={"MessageID": "3000", "Status": "Delivered"}).get_json()["applied"] == 1
    assert client.post(url, json={"MessageID": "3000", "Status": "Expired"}).get_json()["applied"] == 1
    assert rt.ledger.get(M, RID).state == "sent" and "fallbacks_after_failure" not in rt.registry.counters(M)


def test_sms_expired_report_moves_on(web):  # noqa: F811
    client, rt = web
    log, url = _sent_by_sms(rt)
    assert client.post(url, data={"messageId": "3000", "status": "expired"}).get_json()["applied"] == 1
    assert rt.ledger.get(M, RID).state == "scheduled"
    assert deliver(rt, M, C, RID, rt.clock()) == "sent" and log.sent == [RID]

