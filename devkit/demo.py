"""`make demo`: the product working end to end, without a Salla account.

Starts, all on 127.0.0.1 and all stopped at the end: a throwaway Redis, the Salla sandbox,
a reminder receiver (what a merchant's system would be), fakes of the WhatsApp Cloud API and
Unifonic and a real SMTP server (devkit/providers.py), the web process under gunicorn and a
celery worker. It sets the store's channels through the admin API (WhatsApp, SMS, e-mail, its
webhook and the log, policy `all`), delivers signed Salla webhooks (plus a repeat, a forged one
and an event we do not act on) and prints the reminders that come out, with the Arabic text
that went out by WhatsApp, SMS and e-mail.
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
from devkit.providers import SmtpFake, UnifonicFake, WhatsAppFake
from devkit.receiver import ReminderLog, create_receiver
from devkit.redis_server import RedisServer, free_port
from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from devkit.sandbox_embedded import INTROSPECT_PATH, dashboard_app, dashboard_page_url
from devkit.sandbox_seed import EXPECTED_STAGE_POINTS, SEEDED
from service.domain.signatures import sign

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "salla" / "samples"
WEBHOOK_SECRET = "demo-webhook-secret"
SALLA_TOKEN = "demo-sandbox-token"
REMINDER_SECRET = "demo-reminder-secret"
ADMIN_TOKEN = "demo-admin-token-0123456789abcdefghij"
MERCHANT = 1305146709  # the store of Salla's samples


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
    # One message per customer: the stages due at once go out together (service/domain/reminders.py).
    expected = sum(1 for stages in EXPECTED_STAGE_POINTS.values() if stages)
    whatsapp, unifonic = WhatsAppFake(), UnifonicFake()
    with tempfile.TemporaryDirectory(prefix="reminder-demo-") as tmp, \
            RedisServer(Path(tmp) / "redis", appendonly=False) as redis_server, \
            serve_in_thread(sandbox_app := create_sandbox(token=SALLA_TOKEN)) as sandbox, \
            serve_in_thread(dashboard_host := dashboard_app(sandbox_app, "")) as dashboard, \
            serve_in_thread(whatsapp.app()) as wa_server, serve_in_thread(unifonic.app()) as sms_server, \
            SmtpFake() as smtp:
        log = ReminderLog(REMINDER_SECRET)
        with serve_in_thread(create_receiver(log)) as receiver:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REMINDER_", "CELERY_", "TOKEN_"))}
            env.update(REDIS_URL=redis_server.url, SALLA_WEBHOOK_SECRET=WEBHOOK_SECRET,
                       TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(),
                       SALLA_API_BASE_URL=sandbox.url, SALLA_ACCESS_TOKEN=SALLA_TOKEN,
                       REMINDER_CHANNELS="log,webhook", REMINDER_WEBHOOK_URL=receiver.url + "/reminders",
                       REMINDER_WEBHOOK_SECRET=REMINDER_SECRET, REMINDER_LANGUAGE=language,
                       ADMIN_TOKEN=ADMIN_TOKEN,
                       # The demo runs at any hour; a real store keeps its quiet hours.
                       QUIET_HOURS="off",
                       # The store's channels are the fakes here, on 127.0.0.1 over http://.
                       ALLOW_PRIVATE_URLS="1",
                       # The app's embedded page, framed by the sandbox's stand-in for Salla's dashboard.
                       SALLA_APP_ID=str(sandbox_app.extensions["salla_embedded_tokens"].app_id),
                       SALLA_INTROSPECT_URL=sandbox.url + INTROSPECT_PATH, EMBEDDED_DEV_ORIGIN=dashboard.url,
                       SALLA_EMBEDDED_SDK_URL="none")
            port = free_port()
            web_url = f"http://127.0.0.1:{port}"
            env["PUBLIC_BASE_URL"] = web_url
            dashboard_page = dashboard_page_url(dashboard_host, dashboard.url, web_url, MERCHANT)
            web = ManagedProcess([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                                  "service.web.app:create_app()"], env, Path(tmp) / "web.log", ready_text="Booting worker")
            worker = celery_worker(env, Path(tmp) / "worker.log", concurrency=2, name="demo")
            print(f"Salla sandbox at {sandbox.url}, seeded customers:")
            for customer_id, what in SEEDED.items():
                print(f"  {customer_id}: {what}")
            print(f"Merchant dashboard (the app's page inside it, as Salla frames it): {dashboard_page}")
            print(f"\nProvider fakes: WhatsApp Cloud API {wa_server.url}, Unifonic {sms_server.url}, SMTP {smtp.url}")
            print("\nStarting gunicorn (web) and a celery worker ...")
            with web, worker:
                time.sleep(0.5)
                admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                requests.put(f"{web_url}/admin/stores/{MERCHANT}", json={"store_name": "متجر الورد"}, headers=admin,
                             timeout=10)
                answer = requests.put(f"{web_url}/admin/stores/{MERCHANT}/channels", headers=admin, timeout=10, json={
                    "channels": ["whatsapp", "sms", "email", "webhook", "log"], "policy": "all",
                    "whatsapp": {"api_url": wa_server.url + "/v21.0", "phone_number_id": whatsapp.phone_number_id,
                                 "access_token": whatsapp.token, "template_name": "points_expiry_reminder"},
                    "sms": {"provider": "unifonic", "api_url": sms_server.url, "api_key": unifonic.app_sid,
                            "sender": "WardStore"},
                    "email": {"smtp_url": smtp.url, "from": "متجر الورد <reminders@ward.example>"}})
                shown = answer.json()
                print(f"\nStore {MERCHANT}'s channels (PUT /admin/stores/{MERCHANT}/channels -> {answer.status_code}):"
                      f" {', '.join(shown['channels'])}, policy {shown['policy']}; WhatsApp token shown as "
                      f"{shown['whatsapp']['settings']['access_token']}")
                print(f"\nDelivering webhooks to {web_url}/webhooks/salla:")
                for label, body, secret in deliveries():
                    answer = requests.post(f"{web_url}/webhooks/salla", data=body, timeout=10,
                                           headers={"Content-Type": "application/json",
                                                    "X-Salla-Signature": sign(body, secret)})
                    print(f"  {label:<42} -> {answer.status_code} {answer.text.strip()}")
                deadline = time.monotonic() + 45
                while (len(log.received) < expected or len(smtp.messages) < expected) and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # anything unexpected would show up now
                received = log.received
                print(f"\n{len(received)} reminders reached the merchant's webhook (expected {expected}):")
                for item in sorted(received, key=lambda r: (r["body"]["customer_id"], -r["body"]["stage_days"])):
                    r = item["body"]
                    check = "signature ok" if item["signature_valid"] else "BAD SIGNATURE"
                    print(f"  customer {r['customer_id']}  {r['stage_days']:>2}-day stage  {r['points_expiring']:>4} points"
                          f"  earliest expiry {r['earliest_expiry']}  ({check})")
                    for other in r.get("other_stages", []):
                        print(f"           and  {other['stage_days']:>2}-day stage  {other['points_expiring']:>4} points"
                              f"  earliest expiry {other['earliest_expiry']}  (the same message)")
                    print(f"      {r['message']}")
                print(f"\nTo the shoppers: {len(whatsapp.messages)} WhatsApp messages, {len(unifonic.messages)} SMS, "
                      f"{len(smtp.messages)} e-mails. The first of each:")
                if whatsapp.messages:
                    template = whatsapp.messages[0]["body"]["template"]
                    params = [p["text"] for p in template["components"][0]["parameters"]]
                    print(f"  WhatsApp to {whatsapp.messages[0]['body']['to']}: template {template['name']} "
                          f"({template['language']['code']}), parameters:")
                    for name, value in zip(("name", "points", "value", "expiry", "store"), params):
                        print(f"      {name:<7} {value}")
                if unifonic.messages:
                    print(f"  SMS to {unifonic.messages[0]['to']} from {unifonic.messages[0]['sender']}:\n      "
                          f"{unifonic.messages[0]['body']}")
                if smtp.messages:
                    mail = smtp.messages[0]
                    print(f"  E-mail to {mail['To']}: {mail['Subject']}\n      List-Unsubscribe: {mail['List-Unsubscribe']}")
                    for line in mail.get_body(("plain",)).get_content().splitlines():
                        print(f"      {line}")
                status = requests.get(f"{web_url}/admin/stores/{MERCHANT}/statuses", headers=admin, timeout=10).json()
                print("\nDelivery statuses (GET /admin/stores/M/statuses): " +
                      ", ".join(f"{channel} sent {counts['sent']}" for channel, counts in sorted(status["channels"].items())))
                print("\nThe worker's log channel wrote:")
                from devkit.logfiles import reminders_in

                for reminder in reminders_in(worker.log_text()):
                    print("  reminder " + json.dumps(reminder, ensure_ascii=False, sort_keys=True))
    ok = len(received) == expected and all(item["signature_valid"] for item in received) and \
        len(whatsapp.messages) == len(unifonic.messages) == len(smtp.messages) == expected
    print("\nDemo finished: every process stopped." if ok else "\nDemo finished, but not every reminder arrived.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
