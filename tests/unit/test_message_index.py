"""How a provider's status finds its reminder: the cross-store message index (wamid, SMS message
id, Unifonic's CorrelationID), the shared SMS account's one report URL, and the store's own send
window for the fallback a late failure starts. fakeredis + the web app's test client.

The report bodies follow the providers' documentation (shared/channels/REFERENCE.md):
- WhatsApp status webhook, developers.facebook.com "Webhooks: messages / statuses": `failed`
  carries `errors[]`; `biz_opaque_callback_data` is documented on sent/delivered/read only, so
  these failures come without it;
- Unifonic DLR webhook, support.unifonic.com "Can I receive DLR receipt update through a webhook":
  MessageID, DLR ("Delivered" / "Undeliverable"), Recipient, TimeCreated, SCTS, DLRTimestamp;
  docs.unifonic.com "Sending your first SMS": CorrelationID, a unique identifier attached to the
  message (no length documented; ours is the 32-character reminder id).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import requests

from service.web.app import create_app
from service.state.channel_settings import ChannelSettings
from service.domain.unsubscribe import dlr_url, shared_dlr_url
from tests.conftest import TOKEN_KEY, make_settings
from tests.unit.test_shopper_channels import REMINDER, WA, Clock, Fake
from workers.delivery import deliver, queue_reminder
from service.ops.runtime import build_runtime

APP_SECRET = "app-secret-1"
ADMIN_TOKEN = "adm-token-for-the-tests-0123456789abcdef"
STORE_A, STORE_B = 77, 78


class ProviderFake(Fake):
    """A channel whose provider is named, as SmsChannel's is (the index is per provider)."""

    def __init__(self, name, provider, message_id=None):
        super().__init__(name, message_id=message_id)
        self.provider = provider


def reminder_of(merchant: int, rid: str, expiry_days: int = 20) -> dict:
    expiry = (datetime.now(timezone.utc) + timedelta(days=expiry_days)).replace(microsecond=0).isoformat()
    return {**REMINDER, "merchant_id": merchant, "reminder_id": rid, "earliest_expiry": expiry,
            "lots": [{"key": f"lot-{rid[:4]}", "expires_at": expiry}]}


@pytest.fixture
def web():
    store = fakeredis.FakeRedis(decode_responses=True)
    settings = make_settings(ADMIN_TOKEN=ADMIN_TOKEN, WHATSAPP_APP_SECRET=APP_SECRET, QUIET_HOURS="off",
                             SMS_PROVIDER="unifonic", SMS_API_URL="https://el.cloud.unifonic.com",
                             SMS_API_KEY="shared-appsid-1", SMS_SENDER="Shared")
    app = create_app(settings, redis_client=store, queue=object())
    rt = build_runtime(settings, store, requests.Session(), clock=Clock())
    return app.test_client(), rt


def sent_by(rt, reminder: dict, *channels) -> None:
    """The store lists these channels under `first` (the web reads its settings; the worker gets the fakes)."""
    names = [channel.name for channel in channels]
    ChannelSettings(rt.store, "lpr:", rt.settings).update(reminder["merchant_id"], {
        "channels": names, "policy": "first", **({"whatsapp": WA} if "whatsapp" in names else {})})
    rt.channels_for = lambda m: (list(channels), "first")
    queue_reminder(rt, reminder, 86400 * 30, rt.clock(), lambda *a: None)
    deliver(rt, reminder["merchant_id"], reminder["customer_id"], reminder["reminder_id"], rt.clock())


def whatsapp_failed(wamid: str, code: int = 131026) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
                                        "metadata": {"display_phone_number": "966500000000",
                                                     "phone_number_id": "109876543210"},
                                        "statuses": [{"id": wamid, "status": "failed", "timestamp": "1767225600",
                                                      "recipient_id": "966501234567",
                                                      "errors": [{"code": code, "title": "Message Undeliverable",
                                                                  "message": "Message Undeliverable",
                                                                  "error_data": {"details": "x"}}]}]}}]}]}).encode()


def signed(body: bytes) -> dict:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def unifonic_dlr(message_id: str, word: str, **extra) -> dict:
    return {"MessageID": message_id, "DLR": word, "Recipient": "966501234567", "TimeCreated": "2027-01-15 11:00:00",
            "SCTS": "2027-01-15 11:00:05", "DLRTimestamp": "2027-01-15 11:00:06", **extra}


def test_a_whatsapp_failure_without_callback_data_is_found_by_its_wamid(web):
    """Issue 15 item 23: Meta documents biz_opaque_callback_data on sent/delivered/read, not on
    failed: the shared endpoint finds the failed status's reminder through the wamid index."""
    client, rt = web
    rid = "a1" * 16
    sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("whatsapp", "whatsapp", "wamid.HBgLOnlyId"),
            Fake("log"))
    body = whatsapp_failed("wamid.HBgLOnlyId")
    assert client.post("/channels/whatsapp/status", data=body, headers=signed(body)).get_json() == \
        {"applied": 1, "unknown": 0}
    record = rt.ledger.get(STORE_A, rid)
    assert record.state == "scheduled" and record.channels["whatsapp"].startswith("failed:undeliverable")
    assert rt.registry.counters(STORE_A)["fallbacks_after_failure"] == 1
    # An unknown wamid is placed nowhere (and kept a while, in case its send is being recorded).
    other = whatsapp_failed("wamid.NotOurs")
    assert client.post("/channels/whatsapp/status", data=other, headers=signed(other)).get_json() == \
        {"applied": 0, "unknown": 1}


def test_a_store_s_own_whatsapp_app_reports_only_its_own_messages(web):
    """Issue 15 item 23: the per-store endpoint, signed with store B's app secret, cannot touch a
    message of store A, even when it names A's wamid."""
    client, rt = web
    rid = "a2" * 16
    sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("whatsapp", "whatsapp", "wamid.OfStoreA"), Fake("log"))
    ChannelSettings(rt.store, "lpr:", rt.settings).update(STORE_B, {"whatsapp": {
        "api_url": "https://graph.example/v21.0", "phone_number_id": "1098765432", "access_token": "x" * 20,
        "template_name": "points_expiry_reminder", "app_secret": "store-b-secret"}})
    body = whatsapp_failed("wamid.OfStoreA")
    signature = "sha256=" + hmac.new(b"store-b-secret", body, hashlib.sha256).hexdigest()
    assert client.post(f"/channels/whatsapp/{STORE_B}/status", data=body,
                       headers={"X-Hub-Signature-256": signature}).get_json() == {"applied": 0, "unknown": 1}
    assert rt.ledger.get(STORE_A, rid).channels["whatsapp"] == "sent"


def test_a_report_at_the_shared_account_url_finds_a_store_on_the_shared_account(web):
    """Issue 15 item 13: two stores on the environment's SMS account (Unifonic: one report URL per
    account). A report at the account-wide URL finds the right store's reminder by MessageID, or by
    the CorrelationID we sent (the reminder id); a store's own URL finds only its own messages."""
    client, rt = web
    rid_a, rid_b = "b1" * 16, "b2" * 16
    sent_by(rt, reminder_of(STORE_A, rid_a), ProviderFake("sms", "unifonic", "3000000001"), Fake("log"))
    sent_by(rt, reminder_of(STORE_B, rid_b), ProviderFake("sms", "unifonic", "3000000002"), Fake("log"))
    url = shared_dlr_url("http://x", (TOKEN_KEY,)).replace("http://x", "")
    assert client.post(url[:-4] + "0000", json=unifonic_dlr("3000000002", "Undeliverable")).status_code == 404
    own_a = dlr_url("http://x", (TOKEN_KEY,), STORE_A).replace("http://x", "")
    assert client.post(own_a, json=unifonic_dlr("3000000002", "Undeliverable")).get_json()["applied"] == 0
    assert rt.ledger.get(STORE_B, rid_b).channels["sms"] == "sent"

    view = client.get(f"/admin/stores/{STORE_B}/channels", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    # where operators find it: signed with the deployment's `links` secret (the token-key URL above
    # is one made before it, still accepted while that key is listed)
    shown = view.get_json()["callbacks"]["sms_delivery_reports_shared_account"]
    from service.state.deployment_secrets import link_keys
    keys = link_keys(rt.store, rt.settings.redis_key_prefix, rt.settings.token_encryption_keys)
    assert shown.endswith(shared_dlr_url("http://x", keys).replace("http://x", ""))
    answer = client.post(url, data=unifonic_dlr("3000000002", "Undeliverable"))  # the console's form shape
    assert answer.get_json() == {"applied": 1, "unknown": 0}
    record = rt.ledger.get(STORE_B, rid_b)
    assert record.state == "scheduled" and record.channels["sms"].startswith("failed:undeliverable")
    assert rt.ledger.get(STORE_A, rid_a).channels["sms"] == "sent"
    # A console that reports the CorrelationID and not the message id (fields can be renamed there).
    answer = client.post(url, json={"CorrelationID": rid_a, "DLR": "Delivered"})
    assert answer.get_json() == {"applied": 1, "unknown": 0}
    assert rt.ledger.get(STORE_A, rid_a).statuses["sms"]["status"] == "delivered"


def test_the_message_index_lives_as_long_as_the_reminder_record(web):
    """Issue 15 item 13: every index key has a lifetime (the record's), kept statuses a short one."""
    client, rt = web
    rid = "c1" * 16
    sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("sms", "unifonic", "3000000009"), Fake("log"))
    record_ttl = rt.store.ttl(rt.keys.store(STORE_A).reminder(rid))
    for handle in ("id:3000000009", f"ref:{rid}"):
        ttl = rt.store.ttl(rt.keys.message_index("unifonic", handle))
        assert 0 < ttl <= record_ttl and record_ttl - ttl < 5
    client.post(shared_dlr_url("http://x", (TOKEN_KEY,)).replace("http://x", ""),
                json=unifonic_dlr("4000000000", "Delivered"))
    assert 0 < rt.store.ttl(rt.keys.early_statuses("unifonic", "id:4000000000")) <= 600


def _quiet_now() -> tuple[str, float]:
    """Quiet hours around this very moment in UTC, and when they end (the callback reads the clock)."""
    now = datetime.now(timezone.utc)
    start = (now - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=3)
    return f"{start:%H:%M}-{end:%H:%M}", end.timestamp()


def test_a_fallback_waits_for_the_store_s_own_quiet_hours(web):
    """Issue 15 item 17: the environment has no quiet hours; the store's own zone (UTC) and quiet
    hours hold its fallback until they end, not the environment's."""
    client, rt = web
    quiet, ends = _quiet_now()
    rt.registry.set_config(STORE_A, timezone="UTC", quiet_hours=quiet)
    rid = "d1" * 16
    sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("whatsapp", "whatsapp", "wamid.Quiet"), Fake("log"))
    body = whatsapp_failed("wamid.Quiet")
    assert client.post("/channels/whatsapp/status", data=body, headers=signed(body)).get_json()["applied"] == 1
    [(_, when)] = rt.store.zrange(rt.due.scheduled_key, 0, -1, withscores=True)
    assert when == pytest.approx(ends, abs=1) and when > time.time() + 3600


def test_an_early_failure_applied_by_the_worker_waits_for_the_store_s_window(web):
    """Issue 15 items 12 and 17: a failure kept before the send is applied by the worker when it
    records the send; the fallback's timer follows the store's zone and quiet hours (UTC,
    07:00-10:00; the worker's clock reads 08:00 UTC), not the environment's (none)."""
    client, rt = web
    rt.registry.set_config(STORE_A, timezone="UTC", quiet_hours="07:00-10:00")
    body = whatsapp_failed("wamid.Window")
    assert client.post("/channels/whatsapp/status", data=body, headers=signed(body)).get_json()["unknown"] == 1
    rid = "f1" * 16
    sent_by(rt, reminder_of(STORE_A, rid, expiry_days=90), ProviderFake("whatsapp", "whatsapp", "wamid.Window"),
            Fake("log"))
    assert rt.ledger.get(STORE_A, rid).channels["whatsapp"].startswith("failed:undeliverable")
    [(_, when)] = rt.store.zrange(rt.due.scheduled_key, 0, -1, withscores=True)
    assert when == rt.clock() + 2 * 3600  # 10:00 UTC


def test_kept_statuses_are_bounded_and_hold_no_shopper_data(web):
    """Issue 15 item 12: what a report URL can make us keep is bounded: 10 statuses per message for
    10 minutes, ids of at most 200 characters, and the WhatsApp error codes only."""
    client, rt = web
    url = shared_dlr_url("http://x", (TOKEN_KEY,)).replace("http://x", "")
    for _ in range(15):
        client.post(url, json=unifonic_dlr("5000000000", "Delivered"))
    assert rt.store.llen(rt.keys.early_statuses("unifonic", "id:5000000000")) == 10
    assert client.post(url, json=unifonic_dlr("9" * 201, "Undeliverable")).get_json() == {"applied": 0, "unknown": 1}
    assert rt.store.keys("*msg-early:unifonic:id:999*") == []
    body = whatsapp_failed("wamid.Private").replace(b'"x"', b'"+966501234567 sara@example.com"')
    client.post("/channels/whatsapp/status", data=body, headers=signed(body))
    [kept] = rt.store.lrange(rt.keys.early_statuses("whatsapp", "id:wamid.Private"), 0, -1)
    assert "966501234567" not in kept and "sara" not in kept and json.loads(kept)["errors"] == [{"code": 131026}]
