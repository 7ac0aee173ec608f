"""Local fakes of the shopper channels' providers, for tests and `make demo`.

Each HTTP fake is a Flask app (serve it with devkit.sandbox.serve_in_thread) that records every
request, answers the shapes the providers document (shared/channels/REFERENCE.md), can be told to
fail with each documented error, and can send the status callbacks a provider would.

- WhatsAppFake: `POST /<version>/<phone_number_id>/messages` (bearer token, template message).
  Checks the body as Meta does: an unknown template name or language is 132001, a parameter
  count other than the approved template's is 132000, a wrong token 190 (HTTP 401). `fail(code,
  to=...)` queues a documented error for the next message to `to` (or to anyone): 130429 (HTTP
  429), 131056, 80007, 131048, 131026, 100, 131047, 131049, 132000, 132001, 132015, 132016, 190.
  `send_statuses(url, [(wamid, status), ...])` POSTs a status webhook signed with
  X-Hub-Signature-256 under the app secret, in the order given.
- UnifonicFake: `POST /rest/SMS/messages` (form, AppSid); `fail("ER-04", to=...)` for ER-01..ER-09.
- TaqnyatFake: `POST /v1/messages` (bearer JSON, 201); `fail(401)`/`fail(500)`/`reject(to)`.
  Both: `send_dlr(url, message_id, status)` POSTs a delivery report as JSON.
- SmtpFake: a real SMTP server (aiosmtpd) on a free loopback port that keeps every message;
  `fail_rcpt("550 5.1.1 ...", to=...)` refuses the next delivery to that address.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
import uuid

import requests
from flask import Flask, jsonify, request

WHATSAPP_ERRORS = {
    130429: (429, "Rate limit hit", "Cloud API message throughput has been reached."),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit",
             "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time."),
    80007: (400, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    131048: (400, "Spam rate limit hit", "Message failed to send because there are restrictions on how many messages can be sent from this phone number."),
    131026: (400, "Message Undeliverable", "Unable to deliver message."),
    100: (400, "Invalid parameter", "The request included one or more unsupported or misspelled parameters."),
    131047: (400, "Re-engagement message", "More than 24 hours have passed since the recipient last replied."),
    131049: (400, "Meta chose not to deliver.", "This message was not delivered to maintain healthy ecosystem engagement."),
    132000: (400, "Number of parameters does not match the expected number of params",
             "The number of variable parameter values does not match the number of variables in the template."),
    132001: (400, "Template does not exist", "The template does not exist in the specified language or has not been approved."),
    132015: (400, "Template is Paused", "Template is paused due to low quality so it cannot be sent in a template message."),
    132016: (400, "Template is Disabled", "Template has been paused too many times due to low quality and is now permanently disabled."),
    190: (401, "Access token has expired", "Error validating access token: Session has expired."),
}
UNIFONIC_ERRORS = {
    "ER-01": "Insufficient balance", "ER-02": "Invalid recipient", "ER-03": "Recipient is blocked",
    "ER-04": "Invalid mobile number", "ER-05": "Route not available", "ER-06": "Message body is empty",
    "ER-07": "Message has been filtered", "ER-08": "Sender ID is not approved", "ER-09": "Duplicate message",
}


class _Failures:
    """Failures queued per recipient (or for anyone: key None), each used once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queued: dict[str | None, list] = {}

    def add(self, to: str | None, *items) -> None:
        with self._lock:
            self._queued.setdefault(to.lstrip("+") if to else None, []).extend(items)

    def take(self, to: str):
        with self._lock:
            for key in (to.lstrip("+"), None):
                if self._queued.get(key):
                    return self._queued[key].pop(0)
        return None


class WhatsAppFake:
    def __init__(self, token: str = "fake-whatsapp-token-0001", app_secret: str = "fake-whatsapp-app-secret",
                 templates: dict[str, int] | None = None, phone_number_id: str = "109876543210"):
        self.token = token
        self.app_secret = app_secret
        self.templates = templates or {"points_expiry_reminder": 5}  # approved name -> body parameters
        self.phone_number_id = phone_number_id
        self.failures = _Failures()
        self._lock = threading.Lock()
        self.messages: list[dict] = []  # accepted: {"id", "phone_number_id", "body"}
        self.refused: list[dict] = []  # {"code", "body"}

    def fail(self, *codes: int, to: str | None = None) -> None:
        self.failures.add(to, *codes)

    def message_to(self, to: str) -> list[dict]:
        return [m for m in self.messages if m["body"]["to"] == to.lstrip("+")]

    def app(self) -> Flask:
        app = Flask("fake-whatsapp")

        def error(code: int):
            status, title, details = WHATSAPP_ERRORS[code]
            return jsonify(error={"message": f"(#{code}) {title}", "type": "OAuthException", "code": code,
                                  "error_data": {"messaging_product": "whatsapp", "details": details},
                                  "fbtrace_id": uuid.uuid4().hex[:22]}), status

        @app.post("/<version>/<phone_number_id>/messages")
        def messages(version: str, phone_number_id: str):
            body = request.get_json(silent=True) or {}
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                code = 190
            else:
                code = self.failures.take(str(body.get("to", "")))
            template = body.get("template") or {}
            if code is None:
                if body.get("messaging_product") != "whatsapp" or body.get("type") != "template" or not body.get("to"):
                    code = 100
                elif template.get("name") not in self.templates or \
                        (template.get("language") or {}).get("code") not in ("ar", "en"):
                    code = 132001
                else:
                    parameters = [p for c in template.get("components", []) if c.get("type") == "body"
                                  for p in c.get("parameters", [])]
                    if len(parameters) != self.templates[template["name"]] or \
                            any(not str(p.get("text", "")).strip() for p in parameters):
                        code = 132000
            if code is not None:
                with self._lock:
                    self.refused.append({"code": code, "body": body})
                return error(code)
            wamid = "wamid.HBgL" + uuid.uuid4().hex.upper()
            with self._lock:
                self.messages.append({"id": wamid, "phone_number_id": phone_number_id, "body": body})
            return jsonify(messaging_product="whatsapp", contacts=[{"input": body["to"], "wa_id": body["to"]}],
                           messages=[{"id": wamid, "message_status": "accepted"}])

        @app.get("/_fake/messages")
        def listing():
            return jsonify(messages=self.messages, refused=self.refused)

        return app

    # -- status webhooks --------------------------------------------------------------------
    def status_payload(self, statuses: list[tuple[str, str]], error_code: int = 131026) -> bytes:
        by_id = {m["id"]: m for m in self.messages}
        items = []
        for wamid, status in statuses:
            sent = by_id.get(wamid, {"body": {}})
            item = {"id": wamid, "status": status, "timestamp": str(int(time.time())),
                    "recipient_id": sent["body"].get("to", "")}
            if sent["body"].get("biz_opaque_callback_data"):
                item["biz_opaque_callback_data"] = sent["body"]["biz_opaque_callback_data"]
            if status == "failed":
                _, title, details = WHATSAPP_ERRORS.get(error_code, (400, "Error", ""))
                item["errors"] = [{"code": error_code, "title": title, "message": title,
                                   "error_data": {"details": details}}]
            else:
                item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "utility"}
            items.append(item)
        payload = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp",
                                            "metadata": {"display_phone_number": "966500000000",
                                                         "phone_number_id": self.phone_number_id},
                                            "statuses": items}}]}]}
        return json.dumps(payload).encode()

    def send_statuses(self, url: str, statuses: list[tuple[str, str]], secret: str | None = None,
                      error_code: int = 131026) -> requests.Response:
        """One webhook per status, in the order given, signed as Meta signs them."""
        answer = None
        for item in statuses:
            body = self.status_payload([item], error_code)
            signature = "sha256=" + hmac.new((secret or self.app_secret).encode(), body, hashlib.sha256).hexdigest()
            answer = requests.post(url, data=body, timeout=10, headers={"Content-Type": "application/json",
                                                                         "X-Hub-Signature-256": signature})
        return answer


class _SmsFake:
    def __init__(self):
        self.failures = _Failures()
        self._lock = threading.Lock()
        self.messages: list[dict] = []  # {"id", "to", "body", "sender"}
        self.refused: list[dict] = []
        self._ids = itertools.count(3_000_000_001)

    def fail(self, *errors, to: str | None = None) -> None:
        self.failures.add(to, *errors)

    def send_dlr(self, url: str, message_id: str, status: str) -> requests.Response:
        return requests.post(url, json=self._dlr(message_id, status), timeout=10)

    def _accept(self, to: str, body: str, sender: str) -> str:
        with self._lock:
            message_id = str(next(self._ids))
            self.messages.append({"id": message_id, "to": to, "body": body, "sender": sender})
        return message_id


class UnifonicFake(_SmsFake):
    def __init__(self, app_sid: str = "fake-unifonic-appsid"):
        super().__init__()
        self.app_sid = app_sid

    def _dlr(self, message_id: str, status: str) -> dict:
        return {"MessageID": message_id, "Status": status, "DateReceived": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def app(self) -> Flask:
        app = Flask("fake-unifonic")

        @app.post("/rest/SMS/messages")
        def send():
            form = request.form
            if form.get("AppSid") != self.app_sid:
                return jsonify(success=False, message="Authentication failed", errorCode="401", data={}), 401
            to, body = form.get("Recipient", ""), form.get("Body", "")
            code = self.failures.take(to)
            if code is None and not body.strip():
                code = "ER-06"
            if code is None and (not to.isdigit() or len(to) < 9):
                code = "ER-04"
            if code is not None:
                with self._lock:
                    self.refused.append({"code": code, "to": to, "body": body})
                return jsonify(success=False, message=UNIFONIC_ERRORS[code], errorCode=code, data={})
            message_id = self._accept(to, body, form.get("SenderID", ""))
            units = len(body.encode("utf-16-le")) // 2
            return jsonify(success=True, message="", errorCode="ER-00", data={
                "MessageID": message_id, "CorrelationID": form.get("CorrelationID", ""), "Status": "Sent",
                "NumberOfUnits": 1 if units <= 70 else -(-units // 67), "Cost": 0.05, "Balance": 99.95,
                "Recipient": to, "TimeCreated": time.strftime("%Y-%m-%d %H:%M:%S"), "CurrencyCode": "SAR"})

        return app


class TaqnyatFake(_SmsFake):
    def __init__(self, token: str = "fake-taqnyat-bearer-token"):
        super().__init__()
        self.token = token
        self._rejected: set[str] = set()

    def reject(self, to: str) -> None:
        self._rejected.add(to.lstrip("+"))

    def _dlr(self, message_id: str, status: str) -> dict:
        return {"messageId": message_id, "status": status.lower()}

    def app(self) -> Flask:
        app = Flask("fake-taqnyat")

        @app.post("/v1/messages")
        def send():
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return jsonify(statusCode=401, message="Unauthorized: the bearer token is not valid"), 401
            body = request.get_json(silent=True) or {}
            recipients = [str(r) for r in body.get("recipients", [])]
            to = recipients[0] if recipients else ""
            status = self.failures.take(to)
            if status is not None:
                with self._lock:
                    self.refused.append({"code": status, "to": to})
                return jsonify(statusCode=status, message="Injected failure"), status
            if not body.get("body") or not recipients or not body.get("sender"):
                return jsonify(statusCode=400, message="recipients, body and sender are required"), 400
            accepted = [r for r in recipients if r not in self._rejected]
            message_id = self._accept(to, body["body"], body["sender"]) if accepted else str(next(self._ids))
            return jsonify(statusCode=201, messageId=int(message_id), cost="0.0500", currency="SAR",
                           totalCount=len(recipients), msgLength=1,
                           accepted="[" + "".join(f"{r}," for r in accepted) + "]",
                           rejected="[" + "".join(f"{r}," for r in recipients if r in self._rejected) + "]"), 201

        return app


class SmtpFake:
    """aiosmtpd's Controller on 127.0.0.1 and a free port; `url` is what SMTP_URL wants."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        from devkit.redis_server import free_port

        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
        self.failures = _Failures()
        self._lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[dict] = []
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port)

    def fail_rcpt(self, *replies: str, to: str | None = None) -> None:
        """e.g. "550 5.1.1 <a@b>: Recipient address rejected" or "451 4.7.1 Try again later"."""
        self.failures.add(to, *replies)

    def to(self, address: str) -> list:
        return [m for m in self.messages if address in str(m["To"])]

    def start(self) -> "SmtpFake":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> "SmtpFake":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _SmtpHandler:
    def __init__(self, fake: SmtpFake):
        self.fake = fake

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.fake.failures.take(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.fake._lock:
            self.fake.messages.append(message)
            self.fake.envelopes.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos)})
        return "250 Message accepted for delivery"
