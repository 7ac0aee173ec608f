"""The shopper channels' providers as their documentation says (issue 15 items 20, 23, 24 and
"the fakes answer as the documentation does"): the documented payloads in
devkit/fixtures/channels/ drive both the devkit's fakes and these tests."""
from __future__ import annotations

import json

import pytest
import requests
import responses

from devkit.providers import FIXTURES, TaqnyatFake, UnifonicFake, WhatsAppFake, documented
from service.state.channel_settings import ChannelSettings
from service.domain.messages import Renderer
from service.domain.sms_reports import read_report
from service.state.stores import ConfigError
from tests.unit.test_fallback import _sent_by_sms
from tests.unit.test_shopper_channels import (C, M, REMINDER, RID, WA, WA_URL, Fake, queue, redis_store,  # noqa: F401
                                              rt, settings_store, web, with_channels)
from workers.delivery import deliver
from service.ops.fallback import classify_sms, classify_whatsapp
from service.clients.providers import base
from service.clients.providers.base import DeliveryPermanentError
from service.clients.providers.sms import SmsChannel
from service.clients.providers.whatsapp import WhatsAppChannel

UNIFONIC_URL = "https://uni.example/rest/SMS/messages"
UNI = {"provider": "unifonic", "api_url": "https://uni.example", "api_key": "appsid-123456", "sender": "MyStore"}


# -- the fixtures themselves ---------------------------------------------------------------------
def test_every_fixture_names_its_source():
    """Issue 15, fakes from documentation: each provider's payloads are kept with the page they come from."""
    files = sorted(FIXTURES.glob("*.json"))
    assert {f.stem for f in files} == {"whatsapp", "unifonic", "taqnyat"}
    for path in files:
        fixture = json.loads(path.read_text(encoding="utf-8"))
        sections = set(fixture) - {"_sources"}
        assert sections and sections <= set(fixture["_sources"]), path.name
        assert all(isinstance(s, str) and len(s) > 20 for s in fixture["_sources"].values())


# -- item 20: every documented SMS state -----------------------------------------------------------
EXPECTED = {  # our reading of each documented state: (ledger status, failure reason)
    "Queued": ("sent", None), "Sent": ("sent", None), "Delivered": ("delivered", None),
    "Undelivered": ("failed", "undeliverable"), "Delivery not confirmed": ("sent", None),
    "Not Sent": ("failed", "refused"), "Pending": ("sent", None), "Rejected": ("failed", "refused"),
    "Failed": ("failed", "undeliverable"), "Enroute": ("sent", None), "Expired": ("failed", "undeliverable"),
    "Deleted": ("failed", "undeliverable"), "Undeliverable": ("failed", "undeliverable"),
    "Accepted": ("sent", None), "Unknown": ("sent", None),
    "DELIVRD": ("delivered", None), "EXPIRED": ("failed", "undeliverable"), "DELETED": ("failed", "undeliverable"),
    "UNDELIV": ("failed", "undeliverable"), "ACCEPTD": ("sent", None), "UNKNOWN": ("sent", None),
    "REJECTD": ("failed", "refused"),
}


def test_every_documented_sms_state_is_read():
    """Issue 15 item 20: every state Unifonic (and Taqnyat) documents maps to delivered, sent or
    failed (with a reason of service/clients/providers/base.py), in either of the console's field names."""
    documented_states = documented("unifonic")["states"] + documented("taqnyat")["states"]
    assert set(documented_states) == set(EXPECTED)
    for state in documented_states:
        for fields in ({"DLR": state}, {"Status": state}, {"status": state.upper().replace(" ", "_")}):
            report = read_report({"MessageID": 7, **fields})
            assert (report.status, report.reason) == EXPECTED[state], (state, fields)
            assert report.message_id == "7"
        failure = classify_sms(read_report({"DLR": state}).word)
        assert (failure.reason if failure else None) == EXPECTED[state][1]
        assert failure is None or (failure.moves_on and failure.reason in vars(base).values())
    # DLR is the delivery state; a console that sends both sends the send status in Status.
    assert read_report({"Status": "Sent", "DLR": "Undelivered"}).status == "failed"
    assert read_report({"DLR": "no such state"}).status is None
    assert read_report({"messageId": ["x"], "status": {"a": 1}}) == read_report({})


def test_unifonic_undelivered_report_moves_on_in_the_documented_form_and_json(web):
    """Issue 15 item 20: Unifonic's `Undelivered` (JSON, as a console may send it) and its
    `Undeliverable` (the documented form's `DLR`) are failures that move on; before, the first
    was an unknown status and nothing moved."""
    client, rt = web
    log, url = _sent_by_sms(rt)
    report = documented("unifonic")["delivery_report_json"]
    report.update(MessageID="3000", Status="Undelivered")
    assert client.post(url, json=report).get_json() == {"applied": 1, "unknown": 0}
    record = rt.ledger.get(M, RID)
    assert record.state == "scheduled" and record.channels["sms"].startswith("failed:undeliverable")
    assert deliver(rt, M, C, RID, rt.clock()) == "sent" and log.sent == [RID]

    fake = UnifonicFake()
    fake.messages.append({"id": "3000", "to": "966501234567", "correlation_id": RID})
    form = fake.dlr_payload("3000", "Delivery not confirmed")
    assert set(form) == set(documented("unifonic")["delivery_report"]) and "Status" not in form
    assert client.post(url, data=form).get_json() == {"applied": 1, "unknown": 0}


def test_the_unifonic_fake_reports_in_the_documented_form(web):
    """Issue 15, fakes from documentation: the Unifonic fake's delivery report is the support
    article's form (`DLR`), not the `Status` word our code knew; the service applies it."""
    client, rt = web
    with_channels(rt, "all", Fake("sms", message_id="3000"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    from service.domain.unsubscribe import dlr_url
    from tests.conftest import TOKEN_KEY
    url = dlr_url("http://x", (TOKEN_KEY,), M).replace("http://x", "")
    fake = UnifonicFake()
    fake.messages.append({"id": "3000", "to": "966501234567", "correlation_id": RID})
    form = fake.dlr_payload("3000", "Delivered")
    assert form["DLR"] == "Delivered" and form["Recipient"] == "966501234567"
    assert client.post(url, data=form).get_json() == {"applied": 1, "unknown": 0}
    assert rt.ledger.get(M, RID).statuses["sms"]["status"] == "delivered"
    as_json = fake.dlr_payload("3000", "Delivered", as_json=True)
    assert as_json["CorrelationID"] == RID and set(as_json) == set(documented("unifonic")["delivery_report_json"])


# -- item 24: Unifonic's `success` --------------------------------------------------------------------
@pytest.mark.parametrize("section", ["send_answer", "send_answer_string_success"])
@responses.activate
def test_unifonic_success_as_boolean_or_string(section):
    """Issue 15 item 24: `success` is a boolean on /rest/SMS/messages and the string "true" on the
    bulk endpoint (both documented): both are an accepted message."""
    answer = documented("unifonic")[section]
    answer["data"]["MessageID"] = 4242
    responses.post(UNIFONIC_URL, json=answer)
    assert SmsChannel(M, UNI, requests.Session(), 2, Renderer()).send(REMINDER) == "4242"


@pytest.mark.parametrize("success", [False, "false"])
@responses.activate
def test_unifonic_documented_error_shape_with_either_success(success):
    """Issue 15 item 24: the documented error answer, `success` false or "false", is read by its code."""
    error = documented("unifonic")["send_error"]
    error.update(success=success, errorCode="ER-04")
    responses.post(UNIFONIC_URL, json=error)
    with pytest.raises(DeliveryPermanentError) as info:
        SmsChannel(M, UNI, requests.Session(), 2, Renderer()).send(REMINDER)
    assert info.value.reason == "undeliverable"


def test_the_fakes_answer_the_documented_shapes():
    """Issue 15, fakes from documentation: what each fake answers has the documented payload's keys."""
    uni = UnifonicFake().app().test_client()
    form = {**documented("unifonic")["send_request"], "AppSid": "fake-unifonic-appsid", "Recipient": "966501234567"}
    answer = uni.post("/rest/SMS/messages", data=form).get_json()
    expected = documented("unifonic")["send_answer"]
    assert answer["success"] is True and set(answer) == set(expected) and set(answer["data"]) == set(expected["data"])
    fake = UnifonicFake()
    fake.string_success = True
    assert fake.app().test_client().post("/rest/SMS/messages", data=form).get_json()["success"] == "true"
    error = uni.post("/rest/SMS/messages", data={**form, "Recipient": "12"}).get_json()
    assert set(error) == set(documented("unifonic")["send_error"]) and error["errorCode"] == "ER-04"

    taq = TaqnyatFake().app().test_client()
    answer = taq.post("/v1/messages", json=documented("taqnyat")["send_request"],
                      headers={"Authorization": "Bearer fake-taqnyat-bearer-token"})
    assert answer.status_code == 201 and set(answer.get_json()) == set(documented("taqnyat")["send_answer"])

    wa = WhatsAppFake()
    client = wa.app().test_client()
    body = documented("whatsapp")["send_request"]
    body["to"], body["template"]["name"] = "966501234567", "points_expiry_reminder"
    body["template"]["language"]["code"] = "ar"
    body["template"]["components"][0]["parameters"] *= 5
    answer = client.post("/v21.0/1/messages", json=body, headers={"Authorization": f"Bearer {wa.token}"}).get_json()
    assert set(answer) == set(documented("whatsapp")["send_answer"])
    assert answer["messages"][0]["id"].startswith("wamid.")
    body["template"]["language"]["code"] = "ar_SA"  # Meta has no ar_SA: not approved in that language
    refused = client.post("/v21.0/1/messages", json=body, headers={"Authorization": f"Bearer {wa.token}"})
    assert refused.get_json()["error"]["code"] == 132001
    assert set(refused.get_json()["error"]) == set(documented("whatsapp")["error_answer"]["error"])


def test_the_whatsapp_fake_s_failed_status_is_meta_s():
    """Issue 15, fakes from documentation (and item 23): Meta documents `biz_opaque_callback_data`
    on sent, delivered and read statuses only; the fake's `failed` carries none, as Meta's."""
    fake = WhatsAppFake()
    fake.messages.append({"id": "wamid.X", "body": {"to": "966501234567", "biz_opaque_callback_data": f"{M}:{RID}"}})
    for status in ("sent", "delivered", "read", "failed"):
        payload = json.loads(fake.status_payload([("wamid.X", status)], error_code=131049))
        example = documented("whatsapp")["status_webhooks"]["failed" if status == "failed" else "sent"]
        assert set(payload) == set(example)
        [item] = payload["entry"][0]["changes"][0]["value"]["statuses"]
        assert item["status"] == status and item["id"] == "wamid.X"
        assert ("biz_opaque_callback_data" in item) == (status != "failed")
        if status == "failed":
            assert item["errors"][0]["code"] == 131049 and set(item["errors"][0]) == set(
                example["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0])


# -- item 23: code 100, and the template's language code ------------------------------------------------
@responses.activate
def test_whatsapp_invalid_parameter_is_the_store_s_setup_with_an_alarm():
    """Issue 15 item 23: 100 "Invalid parameter" is the store's set-up (an operator alarm), not an
    undeliverable shopper; the same code reported late is classified the same way."""
    answer, status = WhatsAppFake.error_answer(100)
    responses.post(WA_URL, json=answer, status=status)
    with pytest.raises(DeliveryPermanentError) as info:
        WhatsAppChannel(M, WA, requests.Session(), 2).send(REMINDER)
    assert info.value.reason == "setup" and info.value.alarm[0] == f"whatsapp_setup_{M}"
    assert f"merchant {M}" in info.value.alarm[1] and "100" in info.value.alarm[1]
    late = classify_whatsapp([{"code": 100}])
    assert (late.reason, late.moves_on) == ("setup", True)


@pytest.mark.parametrize("code, kind", [
    (100, "setup"), (190, "credentials"), (132000, "template"), (132001, "template"), (132015, "template"),
    (132016, "template"), (131026, "undeliverable"), (131047, "refused"), (131049, "refused"),
    (130429, "transient"), (131056, "transient"), (80007, "transient"), (131048, "transient")])
@responses.activate
def test_every_documented_whatsapp_code_is_classified(code, kind):
    """Issue 15 item 23: each Cloud API code the reference names, answered as Meta answers it
    (whatsapp.json), is the shopper's (undeliverable, refused), the store's set-up (setup,
    template, credentials: with an alarm) or transient."""
    assert str(code) in documented("whatsapp")["errors"]
    answer, status = WhatsAppFake.error_answer(code)
    responses.post(WA_URL, json=answer, status=status)
    with pytest.raises(Exception) as info:
        WhatsAppChannel(M, WA, requests.Session(), 2).send(REMINDER)
    assert getattr(info.value, "reason", "transient") == kind
    assert bool(info.value.alarm) == (kind in ("setup", "template", "credentials"))


@responses.activate
def test_the_template_language_code_is_a_store_setting(redis_store):
    """Issue 15 item 23: the language code a store's template was approved in is its setting
    (Meta's codes: `ar`, `en_US`, ...), per reminder language, checked when set; `ar` and `en`
    when unset."""
    cs = settings_store(redis_store)
    cs.update(M, {"whatsapp": WA})
    assert cs.effective(M).of("whatsapp")["template_language_ar"] == "ar"
    assert cs.effective(M).of("whatsapp")["template_language_en"] == "en"
    for field, value in [("template_language_ar", "ar_SA"), ("template_language_ar", "arabic"),
                         ("template_language_en", "ar"), ("template_language_ar", "en_US"),
                         ("template_language_en", "EN_us"), ("template_language_en", 5)]:
        with pytest.raises(ConfigError, match=f"whatsapp.{field}"):
            cs.update(M, {"whatsapp": {field: value}})
    view = cs.update(M, {"whatsapp": {"template_language_en": "en_US", "template_language_ar": "ar"}})
    assert view["whatsapp"]["settings"]["template_language_en"] == "en_US"
    responses.post(WA_URL, json=WhatsAppFake.send_answer("966501234567", "wamid.A"))
    channel = WhatsAppChannel(M, cs.effective(M).of("whatsapp"), requests.Session(), 2)
    channel.send({**REMINDER, "language": "en"})
    channel.send(REMINDER)
    codes = [json.loads(call.request.body)["template"]["language"]["code"] for call in responses.calls]
    assert codes == ["en_US", "ar"]
    assert WhatsAppChannel(M, WA, requests.Session(), 2).request_body(REMINDER, "9665")["template"]["language"] == \
        {"code": "ar"}  # settings from before this one: the defaults
