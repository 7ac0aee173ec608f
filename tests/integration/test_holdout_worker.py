"""Issue 17 §1 with real parts: a real Redis, a real `celery worker` process, the Salla sandbox
over HTTP. A held-out customer gets no message, and the ledger holds a `held_out` record of the
reminder they would have got; the reminded customer's goes out as usual."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis

from devkit.processes import celery_worker
from devkit.sandbox_seed import lot_row
from service.state import deployment_secrets, holdout
from service.web.app import create_app
from service.config.settings import Settings
from tests.conftest import TOKEN_KEY
from tests.integration.conftest import wait_until
from tests.integration.test_end_to_end import deliver, order_created, reads_of
from tests.integration.test_reminder_engine import M, put_lots
from devkit.sandbox import serve_in_thread

pytestmark = pytest.mark.integration


def held_out_records(store, customer_id: int) -> list[dict]:
    found = []
    for key in store.scan_iter(match="lpr:{store:%d}:reminder:*" % M):
        record = store.hgetall(key)
        if record.get("customer_id") == str(customer_id):
            found.append(record)
    return found


def test_a_held_out_customer_gets_no_message_and_a_held_out_ledger_entry(service_env, store, sandbox, reminders,
                                                                          tmp_path):
    """Issue 17 §1: held-out customers get no reminder, but the ledger records each reminder they
    would have got (state held_out, same stage and lots), with a real worker and real Redis."""
    env = dict(service_env, HOLDOUT_PERCENT="50")
    deployment_secrets.forget_cache()
    key = deployment_secrets.secret(redis.Redis.from_url(env["REDIS_URL"]), "lpr:", (TOKEN_KEY,), "holdout")
    held = next(c for c in range(7001, 8000) if holdout.in_holdout(key, M, c, 50))
    reminded = next(c for c in range(7001, 8000) if not holdout.in_holdout(key, M, c, 50))
    expires = datetime.now(ZoneInfo("Asia/Riyadh")) + timedelta(days=3)
    for customer in (held, reminded):
        put_lots(sandbox, customer, [lot_row(400, 0, expires, expires - timedelta(days=300), order_id="1")])
    worker = celery_worker(env, tmp_path / "worker.log", concurrency=1).start()
    try:
        with serve_in_thread(create_app(Settings.from_env(env))) as web:
            assert deliver(web, order_created(held)).json() == {"status": "queued"}
            assert deliver(web, order_created(reminded, order_id=77)).json() == {"status": "queued"}
            [received] = wait_until(lambda: reminders.received, message="the reminded customer's reminder")
            assert received["body"]["customer_id"] == reminded
            [record] = wait_until(lambda: held_out_records(store, held), message="the held-out ledger entry")
            wait_until(lambda: reads_of(sandbox, held) >= 1 and reads_of(sandbox, reminded) >= 1, message="both reads")
            time.sleep(1.0)  # anything the worker still had for the held-out customer
    finally:
        worker.stop()
    assert [r["body"]["customer_id"] for r in reminders.received] == [reminded]
    assert record["state"] == "held_out" and record["stage"] == "7"
    assert not any(field.startswith(("ch:", "st:")) for field in record)  # no channel was tried
    sent = next(r for r in held_out_records(store, reminded))
    assert sent["state"] == "sent" and sent["stage"] == record["stage"]
    marks = store.hgetall(f"lpr:{{store:{M}}}:marks:{held}")
    assert any(field.startswith("h:") for field in marks) and any(field.startswith("r:7:") for field in marks)
    assert f"{held}" not in str(store.hgetall(f"lpr:{{store:{M}}}:holdout"))  # the store's sums name nobody
    from tests.unit.test_key_lifetimes import undocumented_or_immortal
    assert undocumented_or_immortal(store, "lpr:") == []
