"""WhatsApp, SMS and e-mail with real parts: a real Redis, a real `celery worker` and `celery beat`,
the web app over HTTP, and the providers' fakes (devkit/providers.py) over HTTP and SMTP.

One worker run covers, per store: each channel's success, each kind of mapped error (rate limit
retried through beat's sweep, undeliverable, template, token, SMS codes, SMTP refusal), fallback
to the next channel under `first`, `all` with a per-store webhook, status webhooks in any order,
SMS delivery reports, a dead letter, and the unsubscribe link.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import redis
import requests
from celery import Celery

from devkit.providers import SmtpFake, TaqnyatFake, UnifonicFake, WhatsAppFake
from devkit.sandbox import serve_in_thread
from service.config.celery_config import DELIVER_TASK, celery_config
from service.domain.events import Customer
from service.config.settings import Settings
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, sample
from tests.integration.conftest import REMINDER_SECRET, wait_until
from workers.delivery import queue_reminder
from service.ops.runtime import build_runtime

pytestmark = pytest.mark.integration

STORE_A, STORE_B = 1305146709, 42  # A: the sandbox's merchant (Salla's samples); B: a second store
ADMIN = {"Authorization": "Bearer channels-admin-token-0123456789abcdef"}
WA_SECRET, WA_VERIFY = "fake-whatsapp-app-secret", "verify-me-please"


@pytest.fixture
def fakes():
    whatsapp, unifonic, taqnyat = WhatsAppFake(), UnifonicFake(), TaqnyatFake()
    with serve_in_thread(whatsapp.app()) as wa, serve_in_thread(unifonic.app()) as uni, \
            serve_in_thread(taqnyat.app()) as taq, SmtpFake() as smtp:
        whatsapp.url, unifonic.url, taqnyat.url = wa.url, uni.url, taq.url
        yield {"whatsapp": whatsapp, "unifonic": unifonic, "taqnyat": taqnyat, "smtp": smtp}


@pytest.fixture
def service_env(service_env, fakes):
    return {**service_env, "ADMIN_TOKEN": ADMIN["Authorization"].split()[1], "WHATSAPP_APP_SECRET": WA_SECRET,
            "WHATSAPP_VERIFY_TOKEN": WA_VERIFY, "PUBLIC_BASE_URL": "http://127.0.0.1:9"}


def reminder(merchant: int, customer: int, mobile: str | None, email: str | None, points: int = 150, lang="ar") -> dict:
    expiry = (datetime.now(timezone(timedelta(hours=3))) + timedelta(days=5)).replace(microsecond=0)
    rid = f"{merchant % 1000:03d}{customer:05d}".ljust(32, "c")
    return {"reminder_id": rid, "merchant_id": merchant, "customer_id": customer,
            "customer": {"name": "نورة" if lang == "ar" else "Noura", "mobile": mobile, "email": email},
            "stage_days": 7, "points_expiring": points, "earliest_expiry": expiry.isoformat(), "language": lang,
            "value_sar": 7.5, "message": "", "lots": [{"key": f"lot{customer}", "expires_at": expiry.isoformat()}],
            "generated_at": datetime.now(timezone.utc).isoformat()}


def queue(rt, item: dict, publish) -> str:
    """Queue a reminder with the profile a webhook would have saved: a sent reminder keeps no
    body, and a fallback renders it again from the profile and the lots (service/state/ledger.py
    full_reminder)."""
    rt.profiles.save(item["merchant_id"], Customer(item["customer_id"], notifications_enabled=True,
                                                   lang=item["language"], **item["customer"]))
    return queue_reminder(rt, item, 86400, rt.clock(), publish)


def test_channels_per_store_fallbacks_retries_statuses_and_dead_letters(service_env, web, worker, beat, fakes,
                                                                        reminders, store):
    wa, uni, taq, smtp = fakes["whatsapp"], fakes["unifonic"], fakes["taqnyat"], fakes["smtp"]
    put = lambda m, body: requests.put(f"{web.url}/admin/stores/{m}/channels", json=body, headers=ADMIN, timeout=10)  # noqa: E731
    answer = put(STORE_A, {"channels": ["whatsapp", "sms", "email"], "policy": "first",
                           "whatsapp": {"api_url": wa.url + "/v21.0", "phone_number_id": wa.phone_number_id,
                                        "access_token": wa.token, "template_name": "points_expiry_reminder"},
                           "sms": {"provider": "unifonic", "api_url": uni.url, "api_key": uni.app_sid, "sender": "Store"},
                           "email": {"smtp_url": smtp.url, "from": "متجر الورد <reminders@store.example>"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["whatsapp"]["settings"]["access_token"].startswith("••••")
    assert put(STORE_B, {"sms": {"provider": "fax"}}).status_code == 400
    assert put(STORE_B, {"channels": ["sms", "webhook"], "policy": "all",
                         "sms": {"provider": "taqnyat", "api_url": taq.url, "api_key": taq.token, "sender": "StoreB"},
                         "webhook": {"url": reminders.url, "secret": REMINDER_SECRET}}).status_code == 200
    requests.put(f"{web.url}/admin/stores/{STORE_A}", json={"store_name": "متجر الورد"}, headers=ADMIN, timeout=10)

    # The provider failures each reminder meets, per recipient (each used once).
    wa.fail(131026, to="966500000002")               # undeliverable -> SMS
    wa.fail(130429, to="966500000003")               # rate limit -> retried through beat's sweep
    wa.fail(132001, to="966500000004")               # template -> operator alarm; then SMS ER-04 -> e-mail
    uni.fail("ER-04", to="966500000004")
    wa.fail(190, to="966500000005")                  # token -> store alarm; SMS filtered; e-mail refused
    uni.fail("ER-07", to="966500000005")
    smtp.fail_rcpt("550 5.1.1 <gone@example.com>: Recipient address rejected", to="gone@example.com")

    # Customer 1001 comes the whole way: Salla's webhook, a read of the sandbox, WhatsApp.
    body = sample("order.created.json")
    body["data"]["customer"]["id"] = 1001
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert requests.post(web.url + "/webhooks/salla", data=raw, timeout=10, headers={
        "Content-Type": "application/json", "X-Salla-Signature": sign(raw, WEBHOOK_SECRET)}).json() == {"status": "queued"}

    settings = Settings.from_env(service_env)
    client = redis.Redis.from_url(settings.redis_url)
    rt = build_runtime(settings, client, requests.Session())
    producer = Celery("test-producer", set_as_current=False)
    producer.conf.update(celery_config(settings))
    publish = lambda m, c, rid: producer.send_task(DELIVER_TASK, args=[m, c, rid])  # noqa: E731
    direct = {
        2002: reminder(STORE_A, 2002, "+966500000002", None),
        2003: reminder(STORE_A, 2003, "+966500000003", None),
        2004: reminder(STORE_A, 2004, "+966500000004", "sara@example.com"),
        2005: reminder(STORE_A, 2005, "+966500000005", "gone@example.com"),
        2006: reminder(STORE_A, 2006, None, "noura@example.com", points=2, lang="en"),
        3001: reminder(STORE_B, 3001, "+966500000031", None, points=11),
    }
    for item in direct.values():
        assert queue(rt, item, publish) == "created"

    def state(m, c):
        record = rt.ledger.get(m, direct[c]["reminder_id"])
        return record and record.state

    wait_until(lambda: all(state(STORE_A if c < 3000 else STORE_B, c) in ("sent", "dead") for c in direct),
               timeout=40, message="every direct reminder sent or dead")
    wait_until(lambda: wa.message_to("966501806978"), timeout=20, message="customer 1001's WhatsApp message")

    # Each channel's success, and the fallbacks under `first`.
    [first] = wa.message_to("966501806978")
    params = [p["text"] for p in first["body"]["template"]["components"][0]["parameters"]]
    assert params[0] == "Mohammed Ali" and params[1] == "400 نقطة" and params[4] == "متجر الورد"
    assert first["body"]["biz_opaque_callback_data"].startswith(f"{STORE_A}:")
    assert [m["to"] for m in uni.messages] == ["966500000002"]
    assert uni.messages[0]["body"].startswith("\u200fنورة، لديك 150 نقطة في متجر الورد")
    assert len(wa.message_to("966500000003")) == 1 and state(STORE_A, 2003) == "sent"
    assert "attempt 1/12 failed" in worker.log_text() and "130429" in worker.log_text()
    [arabic_mail] = smtp.to("sara@example.com")
    html = arabic_mail.get_body(("html",)).get_content()
    assert '<html lang="ar" dir="rtl">' in html and '<span dir="ltr">150</span> نقطة' in html
    [english_mail] = smtp.to("noura@example.com")
    assert english_mail["Subject"] == "2 points at متجر الورد expire soon"
    assert english_mail.get_body(("plain",)).get_content().startswith("Hi Noura,")
    record_2006 = rt.ledger.get(STORE_A, direct[2006]["reminder_id"])
    assert record_2006.channels["whatsapp"].startswith("failed:no_address")

    # The dead letter: refused everywhere, each for its reason.
    dead = rt.ledger.get(STORE_A, direct[2005]["reminder_id"])
    assert dead.state == "dead" and [r.reminder_id for r in rt.ledger.dead_letters(STORE_A)] == [dead.reminder_id]
    assert dead.channels["whatsapp"].startswith("failed:credentials") and dead.channels["sms"].startswith("failed:refused")
    assert dead.channels["email"].startswith("failed:undeliverable")
    alarms = requests.get(web.url + "/admin/alarms", headers=ADMIN, timeout=10).json()["alarms"]
    assert "whatsapp_template" in alarms and f"whatsapp_token_{STORE_A}" in alarms
    assert store.hget(f"lpr:{{store:{STORE_A}}}:state", "state") != "needs_reauth"

    # Store B, policy `all`: Taqnyat and its own webhook, with an idempotency key and a signed timestamp.
    assert [m["to"] for m in taq.messages] == ["966500000031"] and "11 نقطة" in taq.messages[0]["body"]
    [hooked] = [r for r in reminders.received if r["body"]["merchant_id"] == STORE_B]
    assert hooked["signature_valid"] and hooked["idempotency_key"] == direct[3001]["reminder_id"]
    assert isinstance(hooked["body"]["timestamp"], int)

    # Statuses: WhatsApp webhooks in reverse order, an SMS delivery report, a Taqnyat failure.
    status_url = web.url + "/channels/whatsapp/status"
    assert requests.get(status_url, params={"hub.mode": "subscribe", "hub.verify_token": WA_VERIFY,
                                            "hub.challenge": "8123"}, timeout=10).text == "8123"
    wa.send_statuses(status_url, [(first["id"], "read"), (first["id"], "delivered"), (first["id"], "sent")])
    retried = wa.message_to("966500000003")[0]["id"]
    # Meta does not promise biz_opaque_callback_data on `failed`; these statuses name their reminder anyway.
    wa.send_statuses(status_url, [(retried, "failed"), (retried, "delivered")],  # failed, then delivered after all
                     opaque_on_failed=True)
    # The failure came first: under `first` the reminder had already moved on to SMS (once).
    wait_until(lambda: "966500000003" in [m["to"] for m in uni.messages], timeout=20, message="2003's fallback SMS")
    views = requests.get(f"{web.url}/admin/stores/{STORE_A}/channels", headers=ADMIN, timeout=10).json()
    report = uni.send_dlr(views["callbacks"]["sms_delivery_reports"].replace("http://127.0.0.1:9", web.url),
                          uni.messages[0]["id"], "Delivered")
    assert report.json() == {"applied": 1, "unknown": 0}
    taq_url = requests.get(f"{web.url}/admin/stores/{STORE_B}/channels", headers=ADMIN,
                           timeout=10).json()["callbacks"]["sms_delivery_reports"].replace("http://127.0.0.1:9", web.url)
    assert taq.send_dlr(taq_url, taq.messages[0]["id"], "Undeliverable").json()["applied"] == 1
    statuses = requests.get(f"{web.url}/admin/stores/{STORE_A}/statuses", headers=ADMIN, timeout=10).json()
    assert statuses["channels"]["whatsapp"] == {"sent": 2, "delivered": 2, "read": 1, "failed": {
        "undeliverable": 1, "template": 1, "credentials": 1, "no_address": 1}}
    assert statuses["channels"]["sms"]["delivered"] == 1 and statuses["channels"]["email"]["sent"] == 2
    assert statuses["channels"]["email"]["failed"] == {"undeliverable": 1}
    b = requests.get(f"{web.url}/admin/stores/{STORE_B}/statuses", headers=ADMIN, timeout=10).json()
    assert b["channels"]["sms"]["failed"] == {"undeliverable": 1} and b["channels"]["webhook"]["sent"] == 1

    # The unsubscribe link in the Arabic e-mail: one click, and the profile says so.
    link = str(arabic_mail["List-Unsubscribe"]).strip().strip("<>").replace("http://127.0.0.1:9", web.url)
    assert requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code == 200
    assert rt.profiles.load(STORE_A, 2004).notifications_enabled is False


def test_a_late_failure_moves_the_reminder_on_to_the_next_channel_once(service_env, web, worker, beat, fakes):
    """WhatsApp accepts, then its signed status webhook says failed: the reminder goes on to the
    store's next channel, exactly once, through a real worker; not after delivered, not under `all`."""
    import time

    wa, uni, smtp = fakes["whatsapp"], fakes["unifonic"], fakes["smtp"]
    put = lambda m, body: requests.put(f"{web.url}/admin/stores/{m}/channels", json=body, headers=ADMIN, timeout=10)  # noqa: E731
    whatsapp = {"api_url": wa.url + "/v21.0", "phone_number_id": wa.phone_number_id, "access_token": wa.token,
                "template_name": "points_expiry_reminder"}
    sms = {"provider": "unifonic", "api_url": uni.url, "api_key": uni.app_sid, "sender": "Store"}
    assert put(STORE_A, {"channels": ["whatsapp", "sms", "email"], "policy": "first", "whatsapp": whatsapp, "sms": sms,
                         "email": {"smtp_url": smtp.url, "from": "reminders@store.example"}}).status_code == 200
    assert put(STORE_B, {"channels": ["whatsapp", "sms"], "policy": "all", "whatsapp": whatsapp,
                         "sms": sms}).status_code == 200
    uni.fail("ER-04", to="966500000043")  # 4003's SMS is refused at once: its fallback is the e-mail

    settings = Settings.from_env(service_env)
    rt = build_runtime(settings, redis.Redis.from_url(settings.redis_url), requests.Session())
    producer = Celery("test-producer", set_as_current=False)
    producer.conf.update(celery_config(settings))
    publish = lambda m, c, rid: producer.send_task(DELIVER_TASK, args=[m, c, rid])  # noqa: E731
    items = {
        4001: reminder(STORE_A, 4001, "+966500000041", None),            # sent, failed, failed again -> SMS once
        4002: reminder(STORE_A, 4002, "+966500000042", None),            # delivered, then failed -> kept
        4003: reminder(STORE_A, 4003, "+966500000043", "late@example.com"),  # failed, then sent -> e-mail once
        5001: reminder(STORE_B, 5001, "+966500000051", None),            # policy `all`: both sent already
    }
    for item in items.values():
        assert queue(rt, item, publish) == "created"

    def record(c):
        return rt.ledger.get(STORE_B if c >= 5000 else STORE_A, items[c]["reminder_id"])

    wait_until(lambda: all(record(c).state == "sent" for c in items), timeout=40, message="every reminder sent")
    wamid = {c: wa.message_to(items[c]["customer"]["mobile"])[0]["id"] for c in items}
    assert [m["to"] for m in uni.messages] == ["966500000051"]  # store B's `all`; store A's went by WhatsApp

    url = web.url + "/channels/whatsapp/status"
    # Meta does not promise biz_opaque_callback_data on `failed`; these statuses name their reminder anyway.
    named = {"opaque_on_failed": True}
    wa.send_statuses(url, [(wamid[4001], "sent"), (wamid[4001], "failed"), (wamid[4001], "failed")], **named)
    wa.send_statuses(url, [(wamid[4002], "delivered"), (wamid[4002], "failed")], **named)
    wa.send_statuses(url, [(wamid[4003], "failed"), (wamid[4003], "sent")], error_code=131049, **named)
    wa.send_statuses(url, [(wamid[5001], "failed")], **named)

    wait_until(lambda: [m["to"] for m in uni.messages].count("966500000041") == 1, timeout=20,
               message="4001's SMS after WhatsApp failed")
    wait_until(lambda: len(smtp.to("late@example.com")) == 1, timeout=20, message="4003's e-mail")
    wait_until(lambda: record(4001).state == "sent" and record(4003).state == "sent", timeout=20,
               message="both settled again")
    time.sleep(3)  # a few sweeps later: nothing more goes out
    assert sorted(m["to"] for m in uni.messages) == ["966500000041", "966500000051"]
    assert len(smtp.to("late@example.com")) == 1 and [r["to"] for r in uni.refused] == ["966500000043"]
    assert all(len(wa.message_to(items[c]["customer"]["mobile"])) == 1 for c in items)  # WhatsApp never again

    first = record(4001)
    assert first.channels["whatsapp"].startswith("failed:undeliverable: WhatsApp error 131026")
    assert first.channels["sms"] == "sent" and "email" not in first.channels
    assert record(4003).channels["whatsapp"].startswith("failed:refused: WhatsApp error 131049")
    assert record(4003).channels["email"] == "sent"
    kept = record(4002)
    assert kept.channels == {"whatsapp": "sent"} and kept.statuses["whatsapp"]["failed_later"].startswith("undeliverable@")
    assert record(5001).channels["whatsapp"].startswith("failed:undeliverable") and record(5001).state == "sent"
    counters = requests.get(f"{web.url}/admin/stores/{STORE_A}", headers=ADMIN, timeout=10).json()["counters"]
    assert counters["fallbacks_after_failure"] == 2 and counters["reminders_sent"] == 3  # each reminder once
    assert "fallbacks_after_failure" not in requests.get(f"{web.url}/admin/stores/{STORE_B}", headers=ADMIN,
                                                         timeout=10).json()["counters"]
