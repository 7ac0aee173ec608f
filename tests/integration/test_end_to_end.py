"""A signed Salla order webhook becomes one delivered expiry reminder, with real parts only."""
from __future__ import annotations

import json
import time

import pytest
import requests

from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, sample
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def order_created(customer_id: int, order_id: int = 2116149737) -> bytes:
    body = sample("order.created.json")
    body["data"]["id"] = order_id
    body["data"]["customer"]["id"] = customer_id
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def deliver(web, body: bytes, secret: str = WEBHOOK_SECRET) -> requests.Response:
    return requests.post(web.url + "/webhooks/salla", data=body, timeout=10,
                         headers={"Content-Type": "application/json", "X-Salla-Signature": sign(body, secret)})


def reads_of(sandbox, customer_id: int) -> int:
    stats = requests.get(sandbox.url + "/_sandbox/stats", timeout=5).json()
    return stats["by_customer"].get(str(customer_id), 0)


def test_signed_order_becomes_exactly_one_reminder(web, worker, sandbox, reminders, store):
    body = order_created(1001)
    first = deliver(web, body)
    assert first.status_code == 200 and first.json() == {"status": "queued"}

    [received] = wait_until(lambda: reminders.received, message="the reminder at the receiver")
    assert received["signature_valid"] is True
    reminder = received["body"]
    assert received["reminder_id_header"] == reminder["reminder_id"]
    assert reminder["merchant_id"] == 1305146709
    assert reminder["customer_id"] == 1001
    assert reminder["stage_days"] == 7
    assert reminder["points_expiring"] == 400
    assert reminder["customer"] == {"name": "Mohammed Ali", "mobile": "+966501806978", "email": "usertest@gmail.com"}
    assert reminder["earliest_expiry"].endswith("+03:00")
    assert len(reminder["lots"]) == 1

    # Salla delivers the same bytes 3 more times: recognised, not enqueued again.
    for _ in range(3):
        again = deliver(web, body)
        assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    # A different event for the same customer is read again, and still sends nothing new.
    other = deliver(web, order_created(1001, order_id=99))
    assert other.json() == {"status": "queued"}
    wait_until(lambda: reads_of(sandbox, 1001) >= 2, message="the second read of customer 1001")

    # A customer with nothing expiring: read, and nothing sent. The worker takes tasks one at
    # a time in order, so once this read is done everything before it is done too.
    assert deliver(web, order_created(1002)).json() == {"status": "queued"}
    wait_until(lambda: reads_of(sandbox, 1002) >= 1, message="the read of customer 1002")
    time.sleep(0.5)  # the 1002 task's own (empty) delivery step
    assert len(reminders.received) == 1
    assert reads_of(sandbox, 1001) == 2
    assert "reminder " in worker.log_text()  # the log channel's line
    # Issue 15 item 19: every key this real run left in Redis has a TTL or a documented owner.
    from tests.unit.test_key_lifetimes import undocumented_or_immortal
    assert undocumented_or_immortal(store, "lpr:") == []


def test_multi_page_histories_quirky_shapes_and_several_stages(web, worker, sandbox, reminders):
    """Every seeded customer's due stages arrive with the points the seed says, no more."""
    from devkit.sandbox_seed import EXPECTED_STAGE_POINTS

    for customer_id in (1003, 1004, 1005):
        assert deliver(web, order_created(customer_id)).json() == {"status": "queued"}
    assert deliver(web, order_created(1002)).json() == {"status": "queued"}
    wait_until(lambda: reads_of(sandbox, 1002) >= 1, message="all four customers read")
    time.sleep(0.5)
    got = {}
    for r in reminders.received:
        assert r["signature_valid"]
        for part in [r["body"], *r["body"]["other_stages"]]:  # stages due at once share a message
            got.setdefault(r["body"]["customer_id"], {})[part["stage_days"]] = part["points_expiring"]
    assert len(reminders.received) == 3  # one message per customer
    assert got == {c: EXPECTED_STAGE_POINTS[c] for c in (1003, 1004, 1005)}
    assert reads_of(sandbox, 1003) == 2  # 75 lots at 60 a page: both pages, built from our base URL


def test_bad_signature_is_refused_over_http(web, store):
    response = deliver(web, order_created(1001), secret="wrong")
    assert response.status_code == 401
    assert store.keys("*:seen:*") == []
    assert store.llen("intake") == 0


def test_redis_outage_answers_503_quickly(service_env):
    from devkit.redis_server import free_port
    from service.web.app import create_app
    from service.config.settings import Settings
    from devkit.sandbox import serve_in_thread

    env = dict(service_env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with serve_in_thread(create_app(Settings.from_env(env))) as dead:
        started = time.monotonic()
        response = deliver(dead, order_created(1001))
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert time.monotonic() - started < 10  # well inside Salla's 30 s


def test_a_failing_receiver_is_retried_by_the_worker_and_gets_the_reminder_once(web, worker, beat, reminders):
    reminders.fail_next(503, 500)
    assert deliver(web, order_created(1001)).json() == {"status": "queued"}
    [received] = wait_until(lambda: reminders.received, timeout=45, message="the retried reminder")
    assert received["body"]["stage_days"] == 7
    log = worker.log_text()
    assert log.count("attempt 1/12 failed") == 1 and log.count("attempt 2/12 failed") == 1
    # The log channel succeeded on the first attempt and was not repeated by the retries.
    assert log.count('"stage_days": 7') == 1
