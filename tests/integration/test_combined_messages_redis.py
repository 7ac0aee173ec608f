"""Stages due for one customer at once reach the shopper as one message per channel (issue 15
item 15), with real parts: a real Redis, a real `celery worker`, the web app over HTTP, the
Salla sandbox and the providers' fakes (devkit/providers.py)."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest
import requests

from devkit.providers import SmtpFake, UnifonicFake, WhatsAppFake
from devkit.sandbox import serve_in_thread
from service.domain import arabic
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, sample
from tests.integration.conftest import REMINDER_SECRET, wait_until

pytestmark = pytest.mark.integration

STORE = 1305146709  # the sandbox's merchant (Salla's samples)
ADMIN = {"Authorization": "Bearer combined-admin-token-0123456789abcdef"}


@pytest.fixture
def fakes():
    whatsapp, unifonic = WhatsAppFake(), UnifonicFake()
    with serve_in_thread(whatsapp.app()) as wa, serve_in_thread(unifonic.app()) as uni, SmtpFake() as smtp:
        whatsapp.url, unifonic.url = wa.url, uni.url
        yield whatsapp, unifonic, smtp


@pytest.fixture
def service_env(service_env, fakes):
    # The fakes listen on loopback: allowed for local development only.
    return {**service_env, "ADMIN_TOKEN": ADMIN["Authorization"].split()[1], "ALLOW_PRIVATE_URLS": "1"}


def order_of(customer_id: int) -> bytes:
    body = sample("order.created.json")
    body["data"]["id"] = 7000 + customer_id
    body["data"]["customer"].update(id=customer_id, first_name=f"Nouf{customer_id}", mobile=555120000 + customer_id % 1000,
                                    mobile_code="+966", email=f"shopper{customer_id}@example.org")
    return json.dumps(body, ensure_ascii=False).encode()


def test_two_stages_due_at_once_are_one_message_per_channel_naming_both(web, worker, fakes, reminders):
    """Issue 15 item 15: `make demo`'s customers 1003 (7-day: 25 points, 30-day: 80) and 1004
    (1-day: 90, 30-day: 150) each get one WhatsApp message, one SMS, one e-mail and one webhook
    delivery, each naming both stages (the nearest expiry first, then the other with its date)."""
    whatsapp, unifonic, smtp = fakes
    answer = requests.put(f"{web.url}/admin/stores/{STORE}/channels", headers=ADMIN, timeout=10, json={
        "channels": ["whatsapp", "sms", "email", "webhook"], "policy": "all",
        "whatsapp": {"api_url": whatsapp.url + "/v21.0", "phone_number_id": whatsapp.phone_number_id,
                     "access_token": whatsapp.token, "template_name": "points_expiry_reminder"},
        "sms": {"provider": "unifonic", "api_url": unifonic.url, "api_key": unifonic.app_sid, "sender": "Store"},
        "email": {"smtp_url": smtp.url, "from": "reminders@store.example"},
        "webhook": {"url": reminders.url, "secret": REMINDER_SECRET}})
    assert answer.status_code == 200, answer.text
    for customer in (1003, 1004):
        raw = order_of(customer)
        assert requests.post(web.url + "/webhooks/salla", data=raw, timeout=10, headers={
            "Content-Type": "application/json", "X-Salla-Signature": sign(raw, WEBHOOK_SECRET)}).json() == \
            {"status": "queued"}

    wait_until(lambda: len(reminders.received) >= 2 and len(whatsapp.messages) >= 2 and len(unifonic.messages) >= 2
               and len(smtp.messages) >= 2, timeout=60, message="both customers' messages on every channel")
    time.sleep(1.5)  # a second message per customer, if any, would arrive now
    assert (len(reminders.received), len(whatsapp.messages), len(unifonic.messages), len(smtp.messages)) == (2, 2, 2, 2)

    expected = {1003: [(7, 25), (30, 80)], 1004: [(1, 90), (30, 150)]}
    for item in reminders.received:
        assert item["signature_valid"]
        body = item["body"]
        customer = body["customer_id"]
        stages = [(body["stage_days"], body["points_expiring"])] + \
                 [(o["stage_days"], o["points_expiring"]) for o in body["other_stages"]]
        assert stages == expected[customer]
        first, second = [datetime.fromisoformat(part["earliest_expiry"]).date()
                         for part in [body, *body["other_stages"]]]
        said = [f"{points} نقطة" for _, points in stages] + [arabic.gregorian(first, "ar"), arabic.gregorian(second, "ar")]
        digits = re.sub(r"\D", "", body["customer"]["mobile"])
        [wa] = whatsapp.message_to(digits)
        [sms] = [m for m in unifonic.messages if m["to"] == digits]
        [mail] = smtp.to(body["customer"]["email"])
        texts = {"webhook": body["message"], "sms": sms["body"],
                 "whatsapp": " ".join(p["text"] for p in wa["body"]["template"]["components"][0]["parameters"]),
                 "email": mail.get_body(("plain",)).get_content()}
        for channel, text in texts.items():
            text = text.replace(arabic.RLM, "")
            places = [text.find(part) for part in said]
            assert -1 not in places and places[0] < places[1], (customer, channel, text)
