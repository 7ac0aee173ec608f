"""No shopper's name, mobile or e-mail in the broker's messages or in Flower, with a real Redis
broker, a real worker and Flower started as the Procfile starts it.

Every message that enters a queue is read raw: the intake message before any worker exists
(LRANGE), and every message of the whole flow as Redis receives it (MONITOR sees each LPUSH to a
queue before a worker can take it). Bodies are decoded (kombu base64-encodes them) and searched.
Then Flower's API and each task's page are searched the same way.
"""
from __future__ import annotations

import base64
import json
import sys
import threading
import time

import pytest
import redis
import requests

from devkit.processes import ManagedProcess, celery_worker
from devkit.redis_server import free_port
from tests.integration.conftest import wait_until
from tests.integration.test_observability import order_with_shopper, personal_strings, post

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUES = {"intake", "events", "reads", "deliveries", "sweep"}
CUSTOMERS = (1001, 1004)


def decoded(raw: str) -> dict:
    """A kombu message from the Redis transport: its JSON envelope, with the body decoded."""
    message = json.loads(raw)
    body = message.get("body", "")
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode("utf-8", "replace")
    message["decoded_body"] = body
    return message


class Monitor(threading.Thread):
    """Every command Redis receives on our database, as it receives it (MONITOR)."""

    def __init__(self, url: str, db: int):
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.db = db
        self.pushes: list[tuple[str, str]] = []  # (queue, raw message)
        self.running = True

    def run(self):
        with self.client.monitor() as monitor:
            while self.running:
                try:
                    command = monitor.next_command()
                except Exception:  # noqa: BLE001 (the connection closed at the end)
                    return
                if int(command.get("db", -1)) != self.db:
                    continue
                words = _split(command["command"])
                if len(words) >= 3 and words[0].upper() in ("LPUSH", "RPUSH") and words[1] in QUEUES:
                    self.pushes.extend((words[1], raw) for raw in words[2:])


def _split(command: str) -> list[str]:
    """redis-py gives MONITOR's command as its arguments joined by spaces, quotes unescaped. kombu
    pushes one message per LPUSH, so: the command, the queue, and the message (JSON, with Redis's
    remaining escapes of backslashes undone)."""
    words = command.split(" ", 2)
    if len(words) == 3:
        words[2] = words[2].replace("\\\\", "\\")
    return words


def test_no_personal_data_in_broker_messages_or_flower(web, service_env, redis_url, reminders, tmp_path, store):
    db = int(redis_url.rsplit("/", 1)[1])
    flower_port = free_port()
    auth = ("operator", "flower-test-password")
    flower_env = dict(service_env, FLOWER_BASIC_AUTH=":".join(auth), FLOWER_PORT=str(flower_port),
                      FLOWER_ADDRESS="127.0.0.1")
    base = f"http://127.0.0.1:{flower_port}"
    monitor = Monitor(redis_url, db)
    monitor.start()
    time.sleep(0.3)
    with ManagedProcess([sys.executable, "-m", "celery", "-A", "workers", "flower"], flower_env,
                        tmp_path / "flower.log", ready_text="Visit me at"):
        # 1. No worker yet: the webhook's message waits in the intake queue; read it raw.
        answer = post(web.url, order_with_shopper(CUSTOMERS[0], order_id=501))
        assert answer.json() == {"status": "queued"}
        waiting = store.lrange("intake", 0, -1)
        assert len(waiting) == 1
        intake_message = decoded(waiting[0])
        assert intake_message["headers"]["task"] == "workers.tasks.drain_intake"
        _assert_nothing_personal(waiting[0] + intake_message["decoded_body"])
        # The shopper's details wait in Redis, in the store's inbox, not in the message.
        assert json.loads(intake_message["decoded_body"])[0] == [{"merchant_id": 1305146709}]

        # 2. A worker for every queue, seen by Flower, then the rest of the flow.
        worker = celery_worker(service_env, tmp_path / "worker.log", concurrency=1).start()
        try:
            wait_until(lambda: requests.get(base + "/api/workers?refresh=1", auth=auth, timeout=20).json(),
                       timeout=30, interval=0.5, message="the worker in Flower")
            assert post(web.url, order_with_shopper(CUSTOMERS[1], order_id=502)).json() == {"status": "queued"}
            # 1004's two stages (1 and 30 days) go out as one message.
            wait_until(lambda: len(reminders.received) >= 2, timeout=60, message="2 reminders (1001: 1, 1004: 1)")

            def flower_saw_deliveries():
                tasks = requests.get(base + "/api/tasks", auth=auth, timeout=10).json()
                names = {t["name"] for t in tasks.values() if t.get("state") == "SUCCESS"}
                return tasks if {"workers.tasks.sync_customer", "workers.tasks.deliver_reminder"} <= names else None

            tasks = wait_until(flower_saw_deliveries, timeout=30, interval=0.5, message="Flower seeing the tasks")
        finally:
            worker.stop()
        monitor.running = False

        # 3. Every message that entered a queue during the flow, raw and decoded.
        kinds = {}
        for queue, raw in monitor.pushes:
            message = decoded(raw)
            kinds.setdefault(message["headers"]["task"], []).append(message)
            _assert_nothing_personal(raw + message["decoded_body"])
        assert {"workers.tasks.drain_intake", "workers.tasks.sync_customer",
                "workers.tasks.deliver_reminder"} <= set(kinds)
        for message in kinds["workers.tasks.deliver_reminder"]:
            merchant, customer, reminder = json.loads(message["decoded_body"])[0]
            assert isinstance(merchant, int) and isinstance(customer, int) and len(reminder) == 32
            assert message["headers"].get("lpr_cid")  # the webhook's correlation id rides along
        for message in kinds["workers.tasks.sync_customer"]:
            assert all(isinstance(arg, (int, str)) for arg in json.loads(message["decoded_body"])[0])

        # 4. Flower: the task list and every task's page.
        _assert_nothing_personal(json.dumps(tasks, ensure_ascii=False))
        pages = 0
        for task_id in tasks:
            page = requests.get(f"{base}/task/{task_id}", auth=auth, timeout=10)
            assert page.status_code == 200
            _assert_nothing_personal(page.text)
            pages += 1
        assert pages >= 4


def _assert_nothing_personal(text: str) -> None:
    leaked = [s for c in CUSTOMERS for s in personal_strings(c) if s in text]
    assert leaked == [], f"personal data in {text[:300]}"
