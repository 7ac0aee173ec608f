"""A provider's failure that arrives before the worker has recorded the send, on a real Redis.

The provider answers our POST and may send its status webhook before our worker has the HTTP
answer back. The status is kept (service/state/message_index.py) and applied when the send lands: the
reminder moves on to the next channel as for any late failure. Both orders of the race are run:
the whole send recorded between the callback's keep and its second look, and the callback first.
"""
from __future__ import annotations

import pytest
import requests

from service.web.app import create_app
from service.state.message_index import MessageIndex
from service.domain.unsubscribe import shared_dlr_url
from tests.conftest import TOKEN_KEY, make_settings
from tests.unit.test_message_index import (APP_SECRET, STORE_A, ProviderFake, reminder_of, sent_by, signed,
                                           unifonic_dlr, whatsapp_failed)
from tests.unit.test_shopper_channels import Clock, Fake
from workers.delivery import deliver
from service.ops.runtime import build_runtime

pytestmark = pytest.mark.integration


@pytest.fixture
def web(redis_url, store):
    settings = make_settings(REDIS_URL=redis_url, WHATSAPP_APP_SECRET=APP_SECRET, QUIET_HOURS="off",
                             SMS_PROVIDER="unifonic", SMS_API_URL="https://el.cloud.unifonic.com",
                             SMS_API_KEY="shared-appsid-1", SMS_SENDER="Shared")
    app = create_app(settings, redis_client=store, queue=object())
    return app.test_client(), build_runtime(settings, store, requests.Session(), clock=Clock())


def test_a_whatsapp_failure_before_the_send_record_moves_on_when_it_lands(web):
    """Issue 15 item 12: the failed status comes first (no send recorded yet); when the worker
    records the send, the failure is applied and the reminder goes on to the next channel."""
    client, rt = web
    rid = "e1" * 16
    whatsapp, log = ProviderFake("whatsapp", "whatsapp", "wamid.Early1"), Fake("log")
    body = whatsapp_failed("wamid.Early1")
    assert client.post("/channels/whatsapp/status", data=body, headers=signed(body)).get_json() == \
        {"applied": 0, "unknown": 1}  # kept, not lost

    sent_by(rt, reminder_of(STORE_A, rid), whatsapp, log)  # the send record lands: the failure with it
    record = rt.ledger.get(STORE_A, rid)
    assert record.channels["whatsapp"].startswith("failed:undeliverable: WhatsApp error 131026")
    assert record.statuses["whatsapp"]["status"] == "failed:undeliverable"
    assert rt.registry.counters(STORE_A)["fallbacks_after_failure"] == 1 and log.sent == []
    assert deliver(rt, STORE_A, record.customer_id, rid, rt.clock()) == "sent" and log.sent == [rid]
    assert rt.store.exists(rt.keys.early_statuses("whatsapp", "id:wamid.Early1")) == 0  # taken, once


def test_an_sms_report_before_the_send_record_on_the_shared_account(web):
    """Issue 15 items 12 and 13: an Undeliverable report at the shared account's URL, before the send
    is recorded, moves the reminder on once the send lands."""
    client, rt = web
    rid = "e2" * 16
    url = shared_dlr_url("http://x", (TOKEN_KEY,)).replace("http://x", "")
    assert client.post(url, json=unifonic_dlr("3000000077", "Undeliverable")).get_json()["applied"] == 0
    log = Fake("log")
    sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("sms", "unifonic", "3000000077"), log)
    assert rt.ledger.get(STORE_A, rid).channels["sms"].startswith("failed:undeliverable")
    assert deliver(rt, STORE_A, 5, rid, rt.clock()) == "sent" and log.sent == [rid]


def test_the_send_recorded_between_the_keep_and_the_second_look_applies_it_once(web, monkeypatch):
    """Issue 15 item 12: the worker records the send (and takes the kept status) right after the
    callback kept it; the callback's second look finds the send and nothing left to apply."""
    client, rt = web
    rid = "e3" * 16
    keep = MessageIndex.keep_early

    def keep_then_the_worker_records(self, *args):
        keep(self, *args)
        sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("whatsapp", "whatsapp", "wamid.Race"), Fake("log"))
    monkeypatch.setattr(MessageIndex, "keep_early", keep_then_the_worker_records)
    body = whatsapp_failed("wamid.Race")
    client.post("/channels/whatsapp/status", data=body, headers=signed(body))
    monkeypatch.setattr(MessageIndex, "keep_early", keep)
    assert rt.ledger.get(STORE_A, rid).channels["whatsapp"].startswith("failed:undeliverable")
    assert rt.registry.counters(STORE_A)["fallbacks_after_failure"] == 1
    assert rt.store.hget(rt.keys.store(STORE_A).statuses, "whatsapp:failed:undeliverable") == "1"


def test_the_send_recorded_before_the_keep_is_applied_by_the_callback(web, monkeypatch):
    """Issue 15 item 12: the callback looked (nothing), the worker then recorded the send and found
    nothing kept, and only then the callback keeps its status: its second look applies it."""
    client, rt = web
    rid = "e4" * 16
    find = MessageIndex.find
    calls = []

    def first_look_misses_then_the_worker_records(self, provider, handles):
        calls.append(provider)
        if len(calls) == 1:
            found = find(self, provider, handles)
            sent_by(rt, reminder_of(STORE_A, rid), ProviderFake("whatsapp", "whatsapp", "wamid.Race2"), Fake("log"))
            return found
        return find(self, provider, handles)
    monkeypatch.setattr(MessageIndex, "find", first_look_misses_then_the_worker_records)
    body = whatsapp_failed("wamid.Race2")
    assert client.post("/channels/whatsapp/status", data=body, headers=signed(body)).get_json() == \
        {"applied": 1, "unknown": 0}
    monkeypatch.setattr(MessageIndex, "find", find)
    record = rt.ledger.get(STORE_A, rid)
    assert record.state == "scheduled" and record.channels["whatsapp"].startswith("failed:undeliverable")
    assert rt.registry.counters(STORE_A)["fallbacks_after_failure"] == 1
