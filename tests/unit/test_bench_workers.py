"""bench/workers.py reads task run times from the workers' own log lines, plain and JSON."""
from __future__ import annotations

import json

from bench.workers import percentile, task_seconds


def test_task_run_times_come_from_plain_and_json_succeeded_lines(tmp_path):
    log = tmp_path / "worker.log"
    plain = "[2026-12-02 16:27:55,031: INFO/ForkPoolWorker-1] Task bare.get[b57003a7-0a3b] succeeded in 0.0554s: 200"
    ours = json.dumps({"level": "INFO", "logger": "celery.app.trace", "msg": "Task workers.tasks.sync_customer"
                       "[649747db-0c30] succeeded in 0.0852317s: 'read'"})
    other = json.dumps({"msg": "Task workers.tasks.pump_store[1] succeeded in 0.001s: None"})
    tiny = "[2026-12-02 17:23:43,760: INFO/ForkPoolWorker-8] Task bare.get[7] succeeded in 9.8e-05s: None"
    log.write_text("\n".join([plain, ours, other, tiny, "not a task line"]) + "\n")
    assert task_seconds(log, "bare.get") == [0.0554, 9.8e-05]
    assert task_seconds(log, "workers.tasks.sync_customer") == [0.0852317]


def test_percentiles():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([], 0.5) != percentile([], 0.5)  # nan: no task line found


def test_the_bare_delivery_posts_the_same_signed_body_as_the_webhook_channel(monkeypatch):
    """Issue 18, goal 2 (deliveries at >= 0.8 x a bare task that POSTs the same signed body to the
    same receiver): bench/workers.py makes the baseline's request with the channel's own code,
    and bare.post sends those bytes and headers unchanged."""
    import importlib

    import requests
    import responses

    from bench.workers import signed_post
    from service.clients.channels import WebhookChannel

    for name, value in {"SALLA_WEBHOOK_SECRET": "x", "SALLA_ACCESS_TOKEN": "t",
                        "TOKEN_ENCRYPTION_KEY": "dGVzdC1vbmx5LWtleS1kby1ub3QtdXNlLWFueXdoZXI="}.items():
        monkeypatch.setenv(name, value)
    bare_tasks = importlib.import_module("bench.bare_tasks")
    reminder = {"reminder_id": "r-1", "merchant_id": 7, "customer_id": 9, "customer_name": "محمد", "points_expiring": 150}
    url = "http://receiver.test/reminders"
    with responses.RequestsMock() as mock:
        mock.post(url, status=200)
        WebhookChannel(url, "s3cret", requests.Session(), 5.0, clock=lambda: 1_700_000_000).send(reminder)
        target, body, headers = signed_post(reminder, url, "s3cret", clock=lambda: 1_700_000_000)
        assert bare_tasks.post.run(target, body.decode("utf-8"), headers) == 200
        channel, bare = mock.calls[0].request, mock.calls[1].request
    assert bare.url == channel.url == url
    assert bare.body == channel.body
    for header in ("Content-Type", "X-Reminder-Signature", "X-Reminder-Id", "Idempotency-Key"):
        assert bare.headers[header] == channel.headers[header]
