"""`make demo`: the product working end to end, without a Salla account.

Starts, all on 127.0.0.1 and all stopped at the end: a throwaway Redis, the Salla sandbox,
a reminder receiver (what a merchant's system would be), the web process under gunicorn
and a celery worker. Then it delivers signed Salla webhooks (plus a repeat, a forged one and
an event we do not act on) and prints the reminders that come out.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from devkit.processes import ManagedProcess, celery_worker
from devkit.receiver import ReminderLog, create_receiver
from devkit.redis_server import RedisServer, free_port
from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from devkit.sandbox_seed import EXPECTED_STAGE_POINTS, SEEDED
from service.signatures import sign

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "salla" / "samples"
WEBHOOK_SECRET = "demo-webhook-secret"
SALLA_TOKEN = "demo-sandbox-token"
REMINDER_SECRET = "demo-reminder-secret"


def webhook(sample: str, customer_id: int) -> bytes:
    body = json.loads((SAMPLES / sample).read_text(encoding="utf-8"))
    data = body["data"]
    if sample.startswith("customer."):
        data["id"] = customer_id
    elif "customer" in data:
        data["customer"]["id"] = customer_id
    else:
        data["order"]["customer"]["id"] = customer_id
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def deliveries() -> list[tuple[str, bytes, str]]:
    first = webhook("order.created.json", 1001)
    return [
        ("order.created, customer 1001", first, WEBHOOK_SECRET),
        ("the same delivery again (Salla retries)", first, WEBHOOK_SECRET),
        ("order.status.updated, customer 1002", webhook("order.status.updated.json", 1002), WEBHOOK_SECRET),
        ("order.created, customer 1003", webhook("order.created.json", 1003), WEBHOOK_SECRET),
        ("customer.updated, customer 1004", webhook("customer.updated.json", 1004), WEBHOOK_SECRET),
        ("order.created, customer 1005", webhook("order.created.json", 1005), WEBHOOK_SECRET),
        ("a forged delivery (wrong secret)", webhook("order.created.json", 1001), "not-the-secret"),
        ("app.uninstalled (not acted on)", (SAMPLES / "app.uninstalled.json").read_bytes(), WEBHOOK_SECRET),
    ]


def main() -> int:
    language = os.environ.get("REMINDER_LANGUAGE", "ar")
    expected = sum(len(stages) for stages in EXPECTED_STAGE_POINTS.values())
    with tempfile.TemporaryDirectory(prefix="reminder-demo-") as tmp, \
            RedisServer(Path(tmp) / "redis", appendonly=False) as redis_server, \
            serve_in_thread(create_sandbox(token=SALLA_TOKEN)) as sandbox:
        log = ReminderLog(REMINDER_SECRET)
        with serve_in_thread(create_receiver(log)) as receiver:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REMINDER_", "CELERY_", "TOKEN_"))}
            env.update(REDIS_URL=redis_server.url, SALLA_WEBHOOK_SECRET=WEBHOOK_SECRET,
                       TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(),
                       SALLA_API_BASE_URL=sandbox.url, SALLA_ACCESS_TOKEN=SALLA_TOKEN,
                       REMINDER_CHANNELS="log,webhook", REMINDER_WEBHOOK_URL=receiver.url + "/reminders",
                       REMINDER_WEBHOOK_SECRET=REMINDER_SECRET, REMINDER_LANGUAGE=language,
                       # The demo runs at any hour; a real store keeps its quiet hours.
                       QUIET_HOURS="off")
            port = free_port()
            web = ManagedProcess([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                                  "service.app:create_app()"], env, Path(tmp) / "web.log", ready_text="Booting worker")
            worker = celery_worker(env, Path(tmp) / "worker.log", concurrency=2, name="demo")
            print(f"Salla sandbox at {sandbox.url}, seeded customers:")
            for customer_id, what in SEEDED.items():
                print(f"  {customer_id}: {what}")
            print("\nStarting gunicorn (web) and a celery worker ...")
            with web, worker:
                time.sleep(0.5)
                print(f"\nDelivering webhooks to http://127.0.0.1:{port}/webhooks/salla:")
                for label, body, secret in deliveries():
                    answer = requests.post(f"http://127.0.0.1:{port}/webhooks/salla", data=body, timeout=10,
                                           headers={"Content-Type": "application/json",
                                                    "X-Salla-Signature": sign(body, secret)})
                    print(f"  {label:<42} -> {answer.status_code} {answer.text.strip()}")
                deadline = time.monotonic() + 45
                while len(log.received) < expected and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # anything unexpected would show up now
                received = log.received
                print(f"\n{len(received)} reminders reached the merchant's webhook (expected {expected}):")
                for item in sorted(received, key=lambda r: (r["body"]["customer_id"], -r["body"]["stage_days"])):
                    r = item["body"]
                    check = "signature ok" if item["signature_valid"] else "BAD SIGNATURE"
                    print(f"  customer {r['customer_id']}  {r['stage_days']:>2}-day stage  {r['points_expiring']:>4} points"
                          f"  earliest expiry {r['earliest_expiry']}  ({check})\n      {r['message']}")
                print("\nThe worker's log channel wrote:")
                for line in worker.log_text().splitlines():
                    if "reminder {" in line:
                        print("  " + line[line.index("reminder {"):])
    ok = len(received) == expected and all(item["signature_valid"] for item in received)
    print("\nDemo finished: every process stopped." if ok else "\nDemo finished, but not every reminder arrived.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
