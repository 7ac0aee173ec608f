"""Metrics and logs from real processes: gunicorn (2 workers) and a prefork Celery worker (2
children), each serving METRICS_PORT, and beat; signed webhooks through the whole flow.

What is checked: the counters scraped over HTTP add up across the processes of each group to
what the test did; the Redis gauges and beat's liveness; every log line is JSON; one webhook's
correlation id is in the web's, the read's and the delivery's lines; no shopper's name, mobile
or e-mail and no secret appears anywhere in the logs.
"""
from __future__ import annotations

import json
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devkit.logfiles import json_lines
from devkit.processes import ManagedProcess, celery_beat, celery_worker
from devkit.redis_server import free_port
from service.domain.signatures import sign
from tests.conftest import TOKEN_KEY, WEBHOOK_SECRET, sample
from tests.integration.conftest import REMINDER_SECRET, SANDBOX_TOKEN, wait_until

pytestmark = pytest.mark.integration

MERCHANT = 1305146709


def shopper(customer_id: int) -> dict:
    """Personal data of a seeded shopper, distinct per customer so that any leak is findable."""
    return {"first_name": f"Nouf{customer_id}", "last_name": "Alqahtani", "mobile": 555120000 + customer_id % 1000,
            "mobile_code": "+966", "email": f"shopper{customer_id}@example.org"}


def personal_strings(customer_id: int) -> list[str]:
    p = shopper(customer_id)
    return [p["first_name"], p["last_name"], str(p["mobile"]), p["email"]]


def order_with_shopper(customer_id: int, order_id: int) -> bytes:
    body = sample("order.created.json")
    body["data"]["id"] = order_id
    body["data"]["customer"].update(id=customer_id, **shopper(customer_id))
    return json.dumps(body, ensure_ascii=False).encode()


def post(url: str, body: bytes, secret: str = WEBHOOK_SECRET) -> requests.Response:
    return requests.post(url + "/webhooks/salla", data=body, timeout=10,
                         headers={"Content-Type": "application/json", "X-Salla-Signature": sign(body, secret)})


def scrape(port: int) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a /metrics page."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def gunicorn_web(service_env, tmp_path):
    port, metrics_port = free_port(), free_port()
    env = dict(service_env, PORT=str(port), BIND_ADDRESS="127.0.0.1", METRICS_PORT=str(metrics_port),
               METRICS_ADDRESS="127.0.0.1")
    process = ManagedProcess([sys.executable, "-m", "gunicorn", "-c", "python:service.web.gunicorn_conf", "--workers", "2",
                              "service.web.app:create_app()"], env, tmp_path / "web.log", ready_text="Booting worker")
    process.start()
    process.url, process.metrics_port = f"http://127.0.0.1:{port}", metrics_port
    wait_until(lambda: _answers(process.url + "/healthz"), message="gunicorn answering")
    yield process
    process.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_metrics_and_json_logs_from_real_processes(gunicorn_web, service_env, sandbox, reminders, tmp_path, store):
    worker_metrics = free_port()
    worker = celery_worker(dict(service_env, METRICS_PORT=str(worker_metrics), METRICS_ADDRESS="127.0.0.1"),
                           tmp_path / "worker.log", concurrency=2).start()
    beat = celery_beat(service_env, tmp_path / "beat.log", tmp_path / "beat-schedule").start()
    try:
        web = gunicorn_web
        # 3 signed webhooks with reminders due (1001: the 7-day stage; 1003: 30 and 7; 1004: 30 and 1,
        # each customer's stages in one message), one repeat, one with a bad signature.
        answers = [post(web.url, order_with_shopper(c, order_id=100 + c)) for c in (1001, 1003, 1004)]
        assert [a.json() for a in answers] == [{"status": "queued"}] * 3
        cid = answers[0].headers["X-Correlation-Id"]
        assert post(web.url, order_with_shopper(1003, order_id=1103)).json() == {"status": "duplicate"}
        assert post(web.url, order_with_shopper(1004, order_id=1104), secret="wrong").status_code == 401
        expected_reminders = 3
        wait_until(lambda: len(reminders.received) >= expected_reminders, timeout=60, message="3 reminders")
        time.sleep(1.0)  # the last delivery's bookkeeping
        assert len(reminders.received) == expected_reminders

        # The web: 2 gunicorn workers answered; their counters are added up on METRICS_PORT.
        web_metrics = scrape(web.metrics_port)
        assert value(web_metrics, "lpr_webhooks_total", event="order.created", outcome="queued") == 3
        assert value(web_metrics, "lpr_webhooks_total", event="order.created", outcome="duplicate") == 1
        assert value(web_metrics, "lpr_webhooks_total", event="unknown", outcome="signature_failed") == 1
        assert value(web_metrics, "lpr_redis_up") == 1
        assert value(web_metrics, "lpr_due_now") == 0
        assert value(web_metrics, "lpr_reads_pending", merchant=str(MERCHANT)) == 0
        # Every read this test made was counted against the store's plan budget (1003 has 2 pages).
        stats = requests.get(sandbox.url + "/_sandbox/stats", timeout=5).json()
        reads = sum(stats["by_customer"].get(str(c), 0) for c in (1001, 1003, 1004))
        assert value(web_metrics, "lpr_budget_used", merchant=str(MERCHANT), window="plan") == reads
        beat_alive = wait_until(lambda: value(scrape(web.metrics_port), "lpr_beat_alive_timestamp_seconds"),
                                timeout=20, message="beat's liveness in the metrics")
        assert abs(time.time() - beat_alive) < 30

        # The worker: 2 prefork children; what they did, added up.
        w = scrape(worker_metrics)
        assert value(w, "lpr_reminders_total", state="scheduled", channel="any") == expected_reminders
        assert value(w, "lpr_reminders_total", state="sent", channel="webhook") == expected_reminders
        assert value(w, "lpr_reminders_total", state="sent", channel="log") == expected_reminders
        assert value(w, "lpr_reminders_total", state="dead", channel="any") == 0
        assert value(w, "lpr_salla_requests_total", endpoint="loyalty_points", status="200") == reads
        assert value(w, "lpr_salla_rate_limited_total", endpoint="loyalty_points") == 0

        # /readyz: beat's own liveness, up or down (its age is at /admin/health, issue 15 item 3).
        ready = requests.get(web.url + "/readyz", timeout=5).json()
        assert ready == {"status": "ready", "redis": "up", "beat": "up"}
    finally:
        worker.stop()
        beat.stop()
    web.stop()

    # Logs: every line of every process is one JSON object.
    logs = {"web": web.log_text(), "worker": worker.log_text(), "beat": beat.log_text()}
    parsed = {}
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{name} wrote nothing"
        for line in lines:
            try:
                assert isinstance(json.loads(line), dict)
            except ValueError:
                pytest.fail(f"{name} wrote a line that is not JSON: {line[:200]}")
        parsed[name] = json_lines(text)
    # The first webhook's correlation id: in the web's line, the read's, and the delivery's.
    mine = [line for line in parsed["web"] + parsed["worker"] if line.get("cid") == cid]
    # The drain's line is an accepted webhook's first at INFO (the web's own is DEBUG: a line per
    # webhook was a fifth of the web's time in bench/ingest.py); it carries the webhook's id.
    assert any(line["process"] == "worker" and "a read is queued" in line["msg"] for line in mine)
    # Once: the app's lines went out twice under gunicorn (its root handler and the app's).
    assert len([line for line in parsed["web"] if "webhook rejected" in line["msg"]]) == 1
    # No access log unless WEB_ACCESS_LOG=1 (gunicorn wrote one for any logconfig_dict).
    assert not [line for line in parsed["web"] if line.get("logger") == "gunicorn.access"]
    assert any(line.get("task") == "workers.tasks.sync_customer" and "synced" in line["msg"] for line in mine)
    assert any(line.get("task") == "workers.tasks.deliver_reminder" and "sent by webhook" in line["msg"]
               for line in mine)
    assert any(line.get("logger") == "reminders" and line["data"]["customer_id"] == 1001 for line in mine)
    # Nothing personal and no secret, anywhere.
    everything = "\n".join(logs.values())
    forbidden = [s for c in (1001, 1003, 1004) for s in personal_strings(c)]
    forbidden += [WEBHOOK_SECRET, TOKEN_KEY, REMINDER_SECRET, SANDBOX_TOKEN]
    leaked = [s for s in forbidden if s in everything]
    assert leaked == []
