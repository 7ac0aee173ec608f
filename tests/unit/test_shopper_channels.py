"""WhatsApp, SMS and e-mail channels: every documented answer mapped, per-store settings, policies,
provider statuses in the ledger, callbacks and unsubscribe. fakeredis + `responses` + aiosmtpd."""
from __future__ import annotations

import hashlib
import hmac
import json

import fakeredis
import pytest
import requests
import responses

from service.web.app import create_app
from service.state.channel_settings import ChannelSettings
from service.state.stores import ConfigError
from service.domain.unsubscribe import dlr_url, make_token, read_token, unsubscribe_url
from tests.conftest import TOKEN_KEY, make_settings
from workers.delivery import MAX_ATTEMPTS, deliver, queue_reminder
from service.clients.providers.base import DeliveryPermanentError, DeliveryTransientError
from service.clients.providers.email import EmailChannel
from service.clients.providers.sms import SmsChannel
from service.clients.providers.whatsapp import WhatsAppChannel
from service.ops.runtime import build_runtime
from service.domain.messages import Renderer

RID = "ab" * 16
M, C = 77, 5
REMINDER = {
    "reminder_id": RID, "merchant_id": M, "customer_id": C,
    "customer": {"name": "سارة", "mobile": "+966501234567", "email": "sara@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-29T23:59:00+03:00",
    "language": "ar", "value_sar": 20.0, "message": "", "lots": [{"key": "a", "expires_at": "2026-11-29T23:59:00+03:00"}],
    "generated_at": "2026-11-22T09:00:00+00:00",
}
WA = {"api_url": "https://graph.example/v21.0", "phone_number_id": "1098765432", "access_token": "x" * 20,
      "template_name": "points_expiry_reminder"}
WA_URL = "https://graph.example/v21.0/1098765432/messages"


def wa_error(code, status=400):
    return {"json": {"error": {"message": f"(#{code}) x", "type": "OAuthException", "code": code,
                               "error_data": {"details": "d"}, "fbtrace_id": "f"}}, "status": status}


# -- WhatsApp -----------------------------------------------------------------------------------
@responses.activate
def test_whatsapp_sends_the_approved_template_with_five_parameters():
    responses.post(WA_URL, json={"messaging_product": "whatsapp", "contacts": [{"input": "966501234567", "wa_id": "966501234567"}],
                                 "messages": [{"id": "wamid.A1", "message_status": "accepted"}]})
    channel = WhatsAppChannel(M, WA, requests.Session(), 2, store_name="متجر الورد")
    assert channel.send(REMINDER) == "wamid.A1"
    request = responses.calls[0].request
    body = json.loads(request.body)
    assert request.headers["Authorization"] == "Bearer " + "x" * 20
    assert body["to"] == "966501234567" and body["type"] == "template"
    assert body["template"]["name"] == "points_expiry_reminder" and body["template"]["language"] == {"code": "ar"}
    assert [p["text"] for p in body["template"]["components"][0]["parameters"]] == [
        "سارة", "400 نقطة", "\u200f20.00\u00a0ر.س.\u200f", "29 نوفمبر 2026 الموافق 19 جمادى الآخرة 1448 هـ", "متجر الورد"]
    assert body["biz_opaque_callback_data"] == f"{M}:{RID}"


@pytest.mark.parametrize("code, status, error, reason, alarm", [
    (130429, 429, DeliveryTransientError, None, None),
    (131056, 400, DeliveryTransientError, None, None),
    (80007, 400, DeliveryTransientError, None, None),
    (131026, 400, DeliveryPermanentError, "undeliverable", None),
    (100, 400, DeliveryPermanentError, "setup", f"whatsapp_setup_{M}"),  # the store's set-up (issue 15 item 23)
    (132001, 400, DeliveryPermanentError, "template", "whatsapp_template"),
    (132000, 400, DeliveryPermanentError, "template", "whatsapp_template"),
    (132015, 400, DeliveryPermanentError, "template", "whatsapp_template"),
    (132016, 400, DeliveryPermanentError, "template", "whatsapp_template"),
    (190, 401, DeliveryPermanentError, "credentials", f"whatsapp_token_{M}"),
    (131047, 400, DeliveryPermanentError, "refused", None),
    (1, 500, DeliveryTransientError, None, None),
])
@responses.activate
def test_whatsapp_errors_are_mapped(code, status, error, reason, alarm):
    responses.post(WA_URL, **wa_error(code, status), headers={"Retry-After": "7"} if status == 429 else {})
    with pytest.raises(error) as info:
        WhatsAppChannel(M, WA, requests.Session(), 2).send(REMINDER)
    assert getattr(info.value, "reason", None) == reason
    assert (info.value.alarm[0] if info.value.alarm else None) == alarm
    if status == 429:
        assert info.value.retry_after == 7


def test_whatsapp_without_a_mobile_is_no_address():
    with pytest.raises(DeliveryPermanentError) as info:
        WhatsAppChannel(M, WA, requests.Session(), 2).send({**REMINDER, "customer": {"name": "x", "mobile": None}})
    assert info.value.reason == "no_address"


# -- SMS ----------------------------------------------------------------------------------------
UNI = {"provider": "unifonic", "api_url": "https://uni.example", "api_key": "appsid-123456", "sender": "MyStore",
       "max_segments": 2}
TAQ = {"provider": "taqnyat", "api_url": "https://taq.example", "api_key": "bearer-123456", "sender": "MyStore"}


@responses.activate
def test_unifonic_form_fields_recipient_without_plus_and_arabic_within_the_segments():
    responses.post("https://uni.example/rest/SMS/messages",
                   json={"success": True, "message": "", "errorCode": "ER-00", "data": {"MessageID": 4242, "Status": "Sent"}})
    channel = SmsChannel(M, UNI, requests.Session(), 2, Renderer(), "متجر الورد")
    assert channel.send(REMINDER) == "4242"
    form = dict(x.split("=", 1) for x in responses.calls[0].request.body.split("&"))
    from urllib.parse import unquote_plus
    form = {k: unquote_plus(v) for k, v in form.items()}
    assert form["Recipient"] == "966501234567" and form["AppSid"] == "appsid-123456" and form["SenderID"] == "MyStore"
    assert form["responseType"] == "JSON" and form["CorrelationID"] == RID
    assert form["Body"].startswith("\u200fسارة، لديك 400 نقطة")
    from service.domain.arabic import sms_segments
    assert sms_segments(form["Body"]).parts <= 2
    one = SmsChannel(M, {**UNI, "max_segments": 1}, requests.Session(), 2, Renderer(), "متجر الورد").text(REMINDER)
    assert sms_segments(one).parts == 1 and one.endswith("…")


@pytest.mark.parametrize("code, error, reason", [
    ("ER-01", DeliveryTransientError, None), ("ER-02", DeliveryPermanentError, "undeliverable"),
    ("ER-03", DeliveryPermanentError, "undeliverable"), ("ER-04", DeliveryPermanentError, "undeliverable"),
    ("ER-05", DeliveryPermanentError, "undeliverable"), ("ER-06", DeliveryPermanentError, "refused"),
    ("ER-07", DeliveryPermanentError, "refused"), ("ER-08", DeliveryPermanentError, "credentials"),
])
@responses.activate
def test_unifonic_error_codes(code, error, reason):
    responses.post("https://uni.example/rest/SMS/messages",
                   json={"success": False, "message": "m", "errorCode": code, "data": {}})
    with pytest.raises(error) as info:
        SmsChannel(M, UNI, requests.Session(), 2, Renderer()).send(REMINDER)
    assert getattr(info.value, "reason", None) == reason
    if code in ("ER-01", "ER-08"):
        assert info.value.alarm[0] == f"sms_account_{M}"


@responses.activate
def test_unifonic_duplicate_counts_as_accepted_and_5xx_is_transient():
    responses.post("https://uni.example/rest/SMS/messages", json={"success": False, "errorCode": "ER-09", "data": {}})
    assert SmsChannel(M, UNI, requests.Session(), 2, Renderer()).send(REMINDER) == ""
    responses.replace(responses.POST, "https://uni.example/rest/SMS/messages", status=503)
    with pytest.raises(DeliveryTransientError):
        SmsChannel(M, UNI, requests.Session(), 2, Renderer()).send(REMINDER)


@responses.activate
def test_taqnyat_bearer_json_and_answers():
    url = "https://taq.example/v1/messages"
    responses.post(url, status=201, json={"statusCode": 201, "messageId": 99, "cost": "0.05", "currency": "SAR",
                                          "totalCount": 1, "msgLength": 2, "accepted": "[966501234567,]", "rejected": "[]"})
    assert SmsChannel(M, TAQ, requests.Session(), 2, Renderer()).send(REMINDER) == "99"
    request = responses.calls[0].request
    assert request.headers["Authorization"] == "Bearer bearer-123456"
    assert json.loads(request.body)["recipients"] == ["966501234567"]
    for status, body, error, reason in [
            (201, {"statusCode": 201, "messageId": 1, "accepted": "[]", "rejected": "[966501234567,]"},
             DeliveryPermanentError, "undeliverable"),
            (401, {"statusCode": 401, "message": "no"}, DeliveryPermanentError, "credentials"),
            (400, {"statusCode": 400, "message": "bad"}, DeliveryPermanentError, "refused"),
            (429, {}, DeliveryTransientError, None), (500, {}, DeliveryTransientError, None)]:
        responses.replace(responses.POST, url, status=status, json=body)
        with pytest.raises(error) as info:
            SmsChannel(M, TAQ, requests.Session(), 2, Renderer()).send(REMINDER)
        assert getattr(info.value, "reason", None) == reason


# -- e-mail (a real SMTP server on loopback) ------------------------------------------------------
@pytest.fixture(scope="module")
def smtp():
    from devkit.providers import SmtpFake
    with SmtpFake() as server:
        yield server


def email_channel(smtp, **changes):
    config = {"smtp_url": smtp.url, "from": "متجر <reminders@store.example>", **changes}
    return EmailChannel(M, config, 5, Renderer(), "متجر الورد", lambda r: f"https://svc.example/unsubscribe/t{r['customer_id']}")


def test_email_is_multipart_rtl_with_one_click_unsubscribe(smtp):
    message_id = email_channel(smtp).send(REMINDER)
    [message] = smtp.to("sara@example.com")
    assert str(message["Message-ID"]).strip().strip("<>") == message_id
    assert message["List-Unsubscribe"] == f"<https://svc.example/unsubscribe/t{C}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == "400 نقطة في متجر الورد تنتهي صلاحيتها قريباً"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert '<html lang="ar" dir="rtl">' in html and text.startswith("\u200fمرحباً سارة")


def test_email_refusals(smtp):
    smtp.fail_rcpt("550 5.1.1 <sara@example.com>: Recipient address rejected", to="sara@example.com")
    with pytest.raises(DeliveryPermanentError) as info:
        email_channel(smtp).send(REMINDER)
    assert info.value.reason == "undeliverable"
    smtp.fail_rcpt("451 4.7.1 Try again later", to="sara@example.com")
    with pytest.raises(DeliveryTransientError):
        email_channel(smtp).send(REMINDER)
    with pytest.raises(DeliveryTransientError):  # nothing listens there
        from devkit.redis_server import free_port
        email_channel(smtp, smtp_url=f"smtp://127.0.0.1:{free_port()}").send(REMINDER)
    with pytest.raises(DeliveryPermanentError) as info:
        email_channel(smtp).send({**REMINDER, "customer": {"name": "x", "email": None}})
    assert info.value.reason == "no_address"


# -- per-store settings --------------------------------------------------------------------------
@pytest.fixture
def redis_store():
    return fakeredis.FakeRedis()


def settings_store(redis_store, **env):
    return ChannelSettings(redis_store, "t:", make_settings(**env))


def test_settings_are_checked_naming_the_field_and_stored_encrypted_and_masked(redis_store):
    cs = settings_store(redis_store)
    for changes, field in [({"channels": ["fax"]}, r"channels\[0\]"), ({"policy": "some"}, "policy"),
                           ({"whatsapp": {"phone_number_id": "abc"}}, "whatsapp.phone_number_id"),
                           ({"sms": {"provider": "twilio"}}, "sms.provider"),
                           ({"sms": {"max_segments": 11}}, "sms.max_segments"),
                           ({"email": {"smtp_url": "http://x"}}, "email.smtp_url"),
                           ({"email": {"from": "not-an-address"}}, "email.from"),
                           ({"webhook": {"url": "ftp://x"}}, "webhook.url"),
                           ({"whatsapp": {"colour": "red"}}, "whatsapp.colour"),
                           ({"channels": ["whatsapp"]}, "whatsapp.phone_number_id is needed")]:
        with pytest.raises(ConfigError, match=field):
            cs.update(M, changes)
    view = cs.update(M, {"channels": ["whatsapp", "sms", "email"], "policy": "first", "whatsapp": WA,
                         "sms": {"provider": "taqnyat", "api_key": "secret-taqnyat-key-9876", "sender": "Store"},
                         "email": {"smtp_url": "smtp://user:p%40ss@mail.example:587", "from": "Store <r@store.example>"}})
    assert view["channels"] == ["whatsapp", "sms", "email"] and view["policy"] == "first" and view["missing"] == []
    assert view["whatsapp"]["settings"]["access_token"] == "••••xxxx"
    assert view["sms"]["settings"]["api_key"] == "••••9876"
    assert view["sms"]["settings"]["api_url"] == "https://api.taqnyat.sa"
    assert view["email"]["settings"]["smtp_url"] == "smtp://user:••••@mail.example:587"
    raw = redis_store.get("t:{store:77}:channels")
    assert b"secret-taqnyat" not in raw and b"taqnyat" not in raw  # the whole record is encrypted
    # A masked value sent back keeps the secret; null goes back to the default.
    cs.update(M, {"sms": {"api_key": "••••9876", "sender": "Other"}})
    assert cs.effective(M).of("sms")["api_key"] == "secret-taqnyat-key-9876"
    assert cs.effective(M).of("sms")["sender"] == "Other"


def test_environment_values_are_only_defaults(redis_store):
    cs = settings_store(redis_store, REMINDER_CHANNELS="sms", SMS_PROVIDER="unifonic", SMS_API_KEY="env-appsid-1",
                        SMS_SENDER="EnvSender")
    effective = cs.effective(M)
    assert effective.channels == ("sms",) and effective.policy == "all"
    assert effective.of("sms")["api_url"] == "https://el.cloud.unifonic.com" and effective.of("sms")["sender"] == "EnvSender"
    cs.update(M, {"sms": {"provider": "taqnyat", "api_key": "store-bearer-1", "sender": "Mine"}})
    assert cs.effective(M).of("sms") == {"max_segments": 3, "provider": "taqnyat", "api_key": "store-bearer-1",
                                         "sender": "Mine", "api_url": "https://api.taqnyat.sa"}
    assert cs.effective(M + 1).of("sms")["api_key"] == "env-appsid-1"  # another store keeps the defaults


def test_templates_are_checked_when_set(redis_store):
    cs = settings_store(redis_store)
    with pytest.raises(ConfigError, match="sms.ar.txt, line 2"):
        cs.set_template(M, "sms.ar.txt", "مرحباً\n{{ name }")
    cs.set_template(M, "sms.ar.txt", "{{ name }}: {{ points_text }}")
    assert cs.templates(M) == {"sms.ar.txt": "{{ name }}: {{ points_text }}"}
    assert cs.delete_template(M, "sms.ar.txt") and cs.templates(M) == {}


# -- the delivery loop: policies, statuses ------------------------------------------------------
class Fake:
    def __init__(self, name, failures=(), message_id=None):
        self.name, self.failures, self.sent, self.message_id = name, list(failures), [], message_id

    def send(self, reminder):
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(reminder["reminder_id"])
        return self.message_id


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def rt():
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session(), clock=Clock())
    return rt


def with_channels(rt, policy, *channels):
    rt.channels_for = lambda m: (list(channels), policy)
    return channels


def queue(rt):
    queue_reminder(rt, REMINDER, 86400, rt.clock(), lambda *a: None)


def test_first_policy_tries_the_next_only_after_a_failure_for_good(rt):
    wa, sms, email = with_channels(rt, "first",
                                   Fake("whatsapp", [DeliveryPermanentError("131026", "undeliverable")]),
                                   Fake("sms", message_id="55"), Fake("email"))
    queue(rt)
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert (wa.sent, sms.sent, email.sent) == ([], [RID], [])
    record = rt.ledger.get(M, RID)
    assert record.channels["whatsapp"].startswith("failed:undeliverable") and record.channels["sms"] == "sent"
    assert "email" not in record.channels
    assert rt.ledger.find_message(M, "sms", "55") == RID
    counts = rt.ledger.redis.hgetall(rt.keys.store(M).statuses)
    assert counts == {"whatsapp:failed:undeliverable": "1", "sms:sent": "1"}


def test_first_policy_waits_for_a_retry_instead_of_moving_on(rt):
    wa, sms = with_channels(rt, "first", Fake("whatsapp", [DeliveryTransientError("130429", retry_after=30)]),
                            Fake("sms"))
    queue(rt)
    assert deliver(rt, M, C, RID, rt.clock()) == "retrying"
    assert sms.sent == []
    [(_, when)] = [(m, s) for m, s in rt.store.zrange(rt.due.scheduled_key, 0, -1, withscores=True)]
    assert when >= rt.clock() + 30  # never sooner than Retry-After
    rt.clock.now += 31
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert wa.sent == [RID] and sms.sent == []


def test_first_policy_moves_on_when_retries_are_used_up(rt):
    wa, sms = with_channels(rt, "first", Fake("whatsapp", [DeliveryTransientError("503")] * MAX_ATTEMPTS), Fake("sms"))
    queue(rt)
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        outcomes.append(deliver(rt, M, C, RID, rt.clock()))
        rt.clock.now += 3600
    assert outcomes == ["retrying"] * (MAX_ATTEMPTS - 1) + ["sent"]
    assert sms.sent == [RID] and rt.ledger.get(M, RID).channels["whatsapp"].startswith("failed:retries_used_up")


def test_all_refused_is_a_dead_letter_and_template_alarm_is_raised(rt):
    alarm = ("whatsapp_template", "merchant 77: template refused")
    with_channels(rt, "first", Fake("whatsapp", [DeliveryPermanentError("132001", "template", alarm=alarm)]),
                  Fake("email", [DeliveryPermanentError("no e-mail", "no_address")]))
    queue(rt)
    assert deliver(rt, M, C, RID, rt.clock()) == "dead"
    assert "whatsapp_template" in rt.alarms.active()
    assert rt.store.hgetall(rt.keys.store(M).statuses) == {"whatsapp:failed:template": "1", "email:failed:no_address": "1"}
    # A replay after the fix tries the refused channels again.
    from service.ops import dead_letters
    rt.channels_for = lambda m: ([Fake("whatsapp"), Fake("email")], "first")
    assert dead_letters.replay(rt.ledger, rt.due, M, RID, rt.clock())
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"


def test_all_policy_keeps_today_s_behaviour(rt):
    log, hook = with_channels(rt, "all", Fake("log"), Fake("webhook", [DeliveryPermanentError("410")]))
    queue(rt)
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert log.sent == [RID] and rt.ledger.get(M, RID).channels["webhook"].startswith("failed:refused")


def test_statuses_apply_in_any_order_and_never_go_backwards(rt):
    with_channels(rt, "all", Fake("whatsapp", message_id="wamid.1"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    ledger = rt.ledger
    assert ledger.record_status(M, RID, "whatsapp", "read", at="10") == "read"
    assert ledger.record_status(M, RID, "whatsapp", "delivered", at="9") == "same"
    assert ledger.record_status(M, RID, "whatsapp", "sent", at="8") == "same"
    assert ledger.record_status(M, RID, "whatsapp", "failed", reason="undeliverable", at="11") == "kept"
    record = ledger.get(M, RID)
    assert record.statuses["whatsapp"]["status"] == "read" and record.statuses["whatsapp"]["at"] == "10"
    assert record.statuses["whatsapp"]["failed_later"] == "undeliverable@11"
    from service.state.ledger import status_counts
    counts = status_counts(rt.store, rt.keys, M)
    assert counts["channels"]["whatsapp"] == {"sent": 1, "delivered": 1, "read": 1, "failed": {}}
    assert ledger.record_status(M, "f" * 32, "whatsapp", "read") == "missing"


def test_a_failure_then_delivered_replaces_the_failure(rt):
    with_channels(rt, "all", Fake("sms", message_id="9"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    assert rt.ledger.record_status(M, RID, "sms", "failed", reason="undeliverable") == "failed"
    assert rt.ledger.record_status(M, RID, "sms", "failed", reason="undeliverable") == "same"
    assert rt.ledger.record_status(M, RID, "sms", "delivered") == "delivered"
    from service.state.ledger import status_counts
    assert status_counts(rt.store, rt.keys, M)["total"] == {"sent": 1, "delivered": 1, "read": 0,
                                                            "failed": {"undeliverable": 0}}


def test_channels_for_builds_per_store_and_sees_a_change_within_seconds(rt):
    directory = rt.directory
    times = iter([0.0, 1.0, 10.0])
    directory.clock = lambda: next(times)
    assert [c.name for c in rt.channels_for(M)[0]] == ["log"]
    ChannelSettings(rt.store, "lpr:", rt.settings).update(M, {"channels": ["whatsapp", "log"], "policy": "first",
                                                               "whatsapp": WA})
    assert [c.name for c in rt.channels_for(M)[0]] == ["log"]  # cached a moment
    channels, policy = rt.channels_for(M)
    assert [c.name for c in channels] == ["whatsapp", "log"] and policy == "first"


def test_a_listed_channel_without_settings_fails_as_not_configured(rt):
    from service.clients.channels import ChannelDirectory
    directory = ChannelDirectory(make_settings(REMINDER_CHANNELS="sms,log"), rt.store, requests.Session(), rt.registry)
    channels, _ = directory.build(M)
    with pytest.raises(DeliveryPermanentError) as info:
        channels[0].send(REMINDER)
    assert info.value.reason == "not_configured" and "sms.api_key" in str(info.value)


# -- the web side: callbacks, unsubscribe, admin ---------------------------------------------------
def test_unsubscribe_tokens_cannot_be_forged():
    token = make_token((TOKEN_KEY,), M, C)
    assert read_token((TOKEN_KEY,), token) == (M, C)
    forged = make_token(("A" * 43 + "=",), M, C + 1)
    assert read_token((TOKEN_KEY,), forged) is None and read_token((TOKEN_KEY,), "garbage") is None
    from cryptography.fernet import Fernet
    new = Fernet.generate_key().decode()
    assert read_token((new, TOKEN_KEY), token) == (M, C)  # a link sent before a key rotation still works
    assert unsubscribe_url("https://svc.example/", (TOKEN_KEY,), M, C) == f"https://svc.example/unsubscribe/{token}"


@pytest.fixture
def web():
    store = fakeredis.FakeRedis(decode_responses=True)
    # ALLOW_PRIVATE_URLS: a store's channels here are the SMTP fake on 127.0.0.1.
    settings = make_settings(ADMIN_TOKEN="adm-token-for-the-tests-0123456789abcdef", WHATSAPP_APP_SECRET="app-secret-1",
                             WHATSAPP_VERIFY_TOKEN="verify-1", ALLOW_PRIVATE_URLS="1")
    app = create_app(settings, redis_client=store, queue=object())
    rt = build_runtime(settings, store, requests.Session(), clock=Clock())
    return app.test_client(), rt


def test_whatsapp_status_webhook_handshake_signature_and_any_order(web):
    client, rt = web
    answer = client.get("/channels/whatsapp/status?hub.mode=subscribe&hub.verify_token=verify-1&hub.challenge=12345")
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "12345"
    assert client.get("/channels/whatsapp/status?hub.mode=subscribe&hub.verify_token=no&hub.challenge=1").status_code == 403
    with_channels(rt, "all", Fake("whatsapp", message_id="wamid.X"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    from devkit.providers import WhatsAppFake
    fake = WhatsAppFake(app_secret="app-secret-1")
    fake.messages.append({"id": "wamid.X", "body": {"to": "966501234567", "biz_opaque_callback_data": f"{M}:{RID}"}})
    for status in ("read", "delivered", "sent"):
        body = fake.status_payload([("wamid.X", status)])
        signature = "sha256=" + hmac.new(b"app-secret-1", body, hashlib.sha256).hexdigest()
        answer = client.post("/channels/whatsapp/status", data=body, headers={"X-Hub-Signature-256": signature})
        assert answer.status_code == 200
    assert answer.get_json() == {"applied": 1, "unknown": 0}
    assert rt.ledger.get(M, RID).statuses["whatsapp"]["status"] == "read"
    body = fake.status_payload([("wamid.X", "failed")])
    assert client.post("/channels/whatsapp/status", data=body,
                       headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}).status_code == 401
    assert client.post("/channels/whatsapp/status", data=body).status_code == 401
    # The per-store URL finds the reminder by the message id alone (a store with its own Meta app).
    ChannelSettings(rt.store, "lpr:", rt.settings).update(M, {"whatsapp": {**WA, "app_secret": "store-secret-1"}})
    plain = json.dumps({"entry": [{"changes": [{"value": {"statuses": [
        {"id": "wamid.X", "status": "failed", "timestamp": "1", "errors": [{"code": 131026}]}]}}]}]}).encode()
    signature = "sha256=" + hmac.new(b"store-secret-1", plain, hashlib.sha256).hexdigest()
    answer = client.post(f"/channels/whatsapp/{M}/status", data=plain, headers={"X-Hub-Signature-256": signature})
    assert answer.get_json() == {"applied": 1, "unknown": 0}
    assert rt.ledger.get(M, RID).statuses["whatsapp"]["status"] == "read"  # a failure after read is kept aside


def test_sms_delivery_report_url_is_secret_and_updates_the_ledger(web):
    client, rt = web
    with_channels(rt, "all", Fake("sms", message_id="3000"))
    queue(rt)
    deliver(rt, M, C, RID, rt.clock())
    url = dlr_url("http://x", (TOKEN_KEY,), M).replace("http://x", "")
    assert client.post(url.replace(url[-6:], "000000"), json={"MessageID": "3000", "Status": "Delivered"}).status_code == 404
    assert client.post(url, json={"MessageID": "3000", "Status": "Delivered"}).get_json() == {"applied": 1, "unknown": 0}
    assert client.post(url, data={"messageId": "nope", "status": "delivered"}).get_json() == {"applied": 0, "unknown": 1}
    assert rt.ledger.get(M, RID).statuses["sms"]["status"] == "delivered"


def test_unsubscribe_page_and_one_click_post_record_the_opt_out(web):
    client, rt = web
    with_channels(rt, "all", Fake("email"))
    queue(rt)
    token = make_token((TOKEN_KEY,), M, C)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and 'dir="rtl"' in page.get_data(as_text=True) and "<form" in page.get_data(as_text=True)
    assert client.get("/unsubscribe/forged").status_code == 404
    assert client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert rt.profiles.load(M, C).notifications_enabled is False
    assert rt.ledger.get(M, RID).state == "cancelled"
    from service.domain.events import Customer
    rt.profiles.save(M, Customer(C, "x", None, None, True))  # Salla's flag later does not undo it
    assert rt.profiles.load(M, C).notifications_enabled is False
    assert rt.registry.counters(M)["unsubscribed"] == 1


def test_admin_channels_templates_statuses_preview(web, smtp):
    client, rt = web
    auth = {"Authorization": "Bearer adm-token-for-the-tests-0123456789abcdef"}
    bad = client.put(f"/admin/stores/{M}/channels", json={"sms": {"provider": "fax"}}, headers=auth)
    assert bad.status_code == 400 and "sms.provider" in bad.get_json()["message"]
    good = client.put(f"/admin/stores/{M}/channels", headers=auth, json={
        "channels": ["email", "log"], "policy": "first",
        "email": {"smtp_url": smtp.url, "from": "Store <r@store.example>"}})
    assert good.status_code == 200 and good.get_json()["channels"] == ["email", "log"]
    assert "/channels/sms/77/dlr/" in good.get_json()["callbacks"]["sms_delivery_reports"]
    refused = client.put(f"/admin/stores/{M}/templates/sms.ar.txt", data="{{ name }\n", headers=auth)
    assert refused.status_code == 400 and "line 1" in refused.get_json()["message"]
    assert client.put(f"/admin/stores/{M}/templates/email_subject.ar.txt", data="نقاطك {{ points_text }}",
                      headers=auth).status_code == 200
    listed = client.get(f"/admin/stores/{M}/templates", headers=auth).get_json()["templates"]
    assert listed["email_subject.ar.txt"]["overridden"] and not listed["sms.ar.txt"]["overridden"]
    from service.domain.events import Customer
    rt.profiles.save(M, Customer(C, "سارة", "+966501234567", "sara@example.com", True))
    before = len(smtp.messages)
    shown = client.post(f"/admin/stores/{M}/preview", json={"customer_id": C}, headers=auth).get_json()
    assert len(smtp.messages) == before  # a preview sends nothing
    assert shown["source"].startswith("sample") and shown["channels"]["email"]["headers"]["Subject"] == "نقاطك 150 نقطة"
    before = len(smtp.messages)
    sent = client.post(f"/admin/stores/{M}/send-test", json={"to": "test@store.example"}, headers=auth)
    assert sent.status_code == 200 and sent.get_json()["channel"] == "email" and len(smtp.messages) == before + 1
    statuses = client.get(f"/admin/stores/{M}/statuses", headers=auth).get_json()
    assert statuses["total"] == {"sent": 0, "delivered": 0, "read": 0, "failed": {}}
    assert "deliveries" in client.get(f"/admin/stores/{M}", headers=auth).get_json()


# -- the customer's language, and the CLI ------------------------------------------------------------
def test_salla_lang_is_read_when_present_and_kept_in_the_profile(rt):
    from service.domain.events import Customer, customer_of, parse_envelope
    from tests.conftest import sample
    body = sample("customer.updated.json")
    body["data"]["lang"] = "EN"
    customer = customer_of(parse_envelope(json.dumps(body).encode()))
    assert customer.lang == "en" and Customer.from_dict(customer.to_dict()).lang == "en"
    del body["data"]["lang"]
    plain = customer_of(parse_envelope(json.dumps(body).encode()))
    assert plain.lang is None and "lang" not in plain.to_dict()  # the queued message is as before
    rt.profiles.save(M, customer)
    rt.profiles.save(M, Customer(customer.id, "x", None, None, None))  # an order event: no language
    assert rt.profiles.load(M, customer.id).lang == "en"


def test_language_is_the_customer_s_else_the_store_s_else_reminder_language(rt):
    from datetime import datetime, timezone
    from service.domain.events import Customer
    from service.domain.loyalty import Lot
    from workers import reminding
    now = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
    lot = Lot(key="k1", name="n", points=30, used_points=0, status="مؤكدة", created_at=now,
              expires_at=datetime(2026, 11, 28, 12, tzinfo=timezone.utc), order_id=None, reference_id=None)
    rt.settings = make_settings(QUIET_HOURS="off")
    languages = []
    for customer_id, lang, store_language in ((1, "en", "ar"), (2, None, "en"), (3, None, None)):
        if store_language:
            rt.registry.set_config(M, language=store_language, store_name="متجر")
        queued = reminding.evaluate(rt, M, Customer(customer_id, "S", "+966500000001", None, True, lang), [lot], now,
                                    lambda *a: None)
        languages.append(queued[0]["language"])
    assert languages == ["en", "en", "en"]  # the store's default stays until changed
    rt.registry.set_config(M, language="ar")
    lot2 = Lot(**{**lot.__dict__, "key": "k2"})
    queued = reminding.evaluate(rt, M, Customer(4, "S", None, None, True, None), [lot2], now, lambda *a: None)
    assert queued[0]["language"] == "ar" and "في متجر" in queued[0]["message"]


def test_cli_channel_commands(monkeypatch, capsys, smtp):
    server = fakeredis.FakeServer()
    monkeypatch.setattr("service.cli.connect", lambda settings: fakeredis.FakeRedis(server=server, decode_responses=True))
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the SMTP fake is on 127.0.0.1
    fakeredis.FakeRedis(server=server).sadd("lpr:stores", 9)  # the store installed the app
    from service.cli import main as cli
    assert cli(["--json", "set-channels", "9", "--order", "email,log", "--policy", "first", "--set", f"email.smtp_url={smtp.url}",
                "--set", "email.from=Store <r@store.example>"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["channels"] == ["email", "log"] and shown["policy"] == "first"
    assert cli(["--json", "set-channels", "9", "--set", "sms.provider=fax"]) == 2
    assert "sms.provider" in capsys.readouterr().err
    assert cli(["--json", "channels", "9"]) == 0 and json.loads(capsys.readouterr().out)["email"]["settings"]["from"]
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as bad:
        bad.write("سطر\n{% if %}\n")
    assert cli(["--json", "set-template", "9", "sms.ar.txt", bad.name]) == 2
    assert "line 2" in capsys.readouterr().err
    assert cli(["--json", "preview", "9", "5", "--channel", "email", "--lang", "en"]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert preview["language"] == "en" and preview["channels"]["email"]["error"]  # customer 5 has no e-mail address
    before = len(smtp.messages)
    assert cli(["--json", "send-test", "9", "--to", "owner@store.example"]) == 0
    assert json.loads(capsys.readouterr().out)["channel"] == "email" and len(smtp.messages) == before + 1
    assert cli(["--json", "statuses", "9"]) == 0
    assert json.loads(capsys.readouterr().out)["9"]["total"]["sent"] == 0


@responses.activate
def test_provider_words_reach_logs_and_the_ledger_without_numbers_or_addresses():
    url = "https://taq.example/v1/messages"
    responses.post(url, status=400, json={"statusCode": 400, "message": "Number 966501234567 (sara@example.com) is invalid"})
    with pytest.raises(DeliveryPermanentError) as info:
        SmsChannel(M, TAQ, requests.Session(), 2, Renderer()).send(REMINDER)
    assert "966501234567" not in str(info.value) and "sara@example.com" not in str(info.value)
    assert "<number>" in str(info.value) and "<address>" in str(info.value)
