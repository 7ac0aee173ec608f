"""Local fakes of the shopper channels' providers, for tests and `make demo`.

Each HTTP fake is a Flask app (serve it with devkit.sandbox.serve_in_thread) that records every
request, answers with the payloads the providers document, can be told to fail with each
documented error, and can send the status callbacks a provider would. The payloads are the
documentation's own examples, kept in devkit/fixtures/channels/<provider>.json with the page
each comes from (`documented()` reads them); the tests parse the same files. So a fake answers
as the provider does, not as our code expects: WhatsApp's `failed` status carries no
`biz_opaque_callback_data` (Meta documents it on sent, delivered and read only), Unifonic's
delivery report names its state `DLR`.

- WhatsAppFake: `POST /<version>/<phone_number_id>/messages` (bearer token, template message).
  Checks the body as Meta does: an unknown template name, or a language it was not approved in
  (`languages`), is 132001, a parameter count other than the approved template's is 132000, a
  wrong token 190 (HTTP 401). `fail(code, to=...)` queues a documented error (whatsapp.json's
  `errors`) for the next message to `to` (or to anyone). `send_statuses(url, [(wamid, status),
  ...])` POSTs a status webhook signed with X-Hub-Signature-256 under the app secret, in order.
- UnifonicFake: `POST /rest/SMS/messages` (form, AppSid); `fail("ER-04", to=...)` for ER-01..ER-09;
  `string_success = True` answers `"success": "true"` as the bulk endpoint documents.
  `send_dlr(url, message_id, state)` POSTs the documented form (`DLR`); `as_json=True` the JSON a
  console can send instead (`Status`, `CorrelationID`).
- TaqnyatFake: `POST /v1/messages` (bearer JSON, 201); `fail(401)`/`fail(500)`/`reject(to)`.
  `send_dlr` POSTs JSON (Taqnyat documents no report: taqnyat.json says so).
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
from pathlib import Path

import requests
from flask import Flask, jsonify, request

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "channels"


def documented(provider: str) -> dict:
    """The provider's documented payloads (devkit/fixtures/channels/<provider>.json), a fresh copy."""
    return json.loads((FIXTURES / f"{provider}.json").read_text(encoding="utf-8"))


WHATSAPP_ERRORS = {int(code): (e["http_status"], e["title"], e["details"])
                   for code, e in documented("whatsapp")["errors"].items()}
UNIFONIC_ERRORS = documented("unifonic")["errors"]


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
                 templates: dict[str, int] | None = None, phone_number_id: str = "109876543210",
                 languages: tuple[str, ...] = ("ar", "en")):
        self.token = token
        self.app_secret = app_secret
        self.templates = templates or {"points_expiry_reminder": 5}  # approved name -> body parameters
        self.languages = tuple(languages)  # the language codes the templates were approved in
        self.phone_number_id = phone_number_id
        self.failures = _Failures()
        self._lock = threading.Lock()
        self.messages: list[dict] = []  # accepted: {"id", "phone_number_id", "body"}
        self.refused: list[dict] = []  # {"code", "body"}

    def fail(self, *codes: int, to: str | None = None) -> None:
        self.failures.add(to, *codes)

    def message_to(self, to: str) -> list[dict]:
        return [m for m in self.messages if m["body"]["to"] == to.lstrip("+")]

    @staticmethod
    def error_answer(code: int) -> tuple[dict, int]:
        """whatsapp.json's error answer, filled in for `code` (one of its `errors`)."""
        status, title, details = WHATSAPP_ERRORS[code]
        answer = documented("whatsapp")["error_answer"]
        answer["error"].update(message=f"(#{code}) {title}", type="OAuthException", code=code,
                               fbtrace_id=uuid.uuid4().hex[:22])
        answer["error"]["error_data"]["details"] = details
        return answer, status

    @staticmethod
    def send_answer(to: str, wamid: str) -> dict:
        answer = documented("whatsapp")["send_answer"]
        answer["contacts"][0].update(input=to, wa_id=to)
        answer["messages"][0]["id"] = wamid
        return answer

    def app(self) -> Flask:
        app = Flask("fake-whatsapp")

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
                        (template.get("language") or {}).get("code") not in self.languages:
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
                answer, status = self.error_answer(code)
                return jsonify(answer), status
            wamid = "wamid.HBgL" + uuid.uuid4().hex.upper()
            with self._lock:
                self.messages.append({"id": wamid, "phone_number_id": phone_number_id, "body": body})
            return jsonify(self.send_answer(body["to"], wamid))

        @app.get("/_fake/messages")
        def listing():
            return jsonify(messages=self.messages, refused=self.refused)

        return app

    # -- status webhooks --------------------------------------------------------------------
    def status_payload(self, statuses: list[tuple[str, str]], error_code: int = 131026,
                       opaque_on_failed: bool = False) -> bytes:
        """whatsapp.json's status webhooks, filled in. Meta documents `biz_opaque_callback_data`
        on sent, delivered and read, not on failed: `opaque_on_failed` adds it there too."""
        by_id = {m["id"]: m for m in self.messages}
        examples = documented("whatsapp")["status_webhooks"]
        payload = examples["sent"]
        payload["entry"][0]["id"] = "102290129340398"
        value = payload["entry"][0]["changes"][0]["value"]
        value["metadata"].update(display_phone_number="966500000000", phone_number_id=self.phone_number_id)
        items = []
        now = str(int(time.time()))
        for wamid, status in statuses:
            sent = by_id.get(wamid, {"body": {}})
            item = (examples["failed"] if status == "failed" else examples["sent"]
                    )["entry"][0]["changes"][0]["value"]["statuses"][0]
            item.update(id=wamid, status=status, timestamp=now, recipient_id=sent["body"].get("to", ""))
            opaque = sent["body"].get("biz_opaque_callback_data")
            item.pop("biz_opaque_callback_data", None)
            if opaque and (status != "failed" or opaque_on_failed):
                item["biz_opaque_callback_data"] = opaque
            if "conversation" in item:
                item["conversation"].update(id=uuid.uuid4().hex, expiration_timestamp=str(int(time.time()) + 86400))
            if status == "failed":
                _, title, details = WHATSAPP_ERRORS.get(error_code, (400, "Error", ""))
                item["errors"][0].update(code=error_code, title=title, message=title)
                item["errors"][0]["error_data"]["details"] = details
            items.append(item)
        value["statuses"] = items
        return json.dumps(payload).encode()

    def send_statuses(self, url: str, statuses: list[tuple[str, str]], secret: str | None = None,
                      error_code: int = 131026, opaque_on_failed: bool = False) -> requests.Response:
        """One webhook per status, in the order given, signed as Meta signs them."""
        answer = None
        for item in statuses:
            body = self.status_payload([item], error_code, opaque_on_failed)
            signature = "sha256=" + hmac.new((secret or self.app_secret).encode(), body, hashlib.sha256).hexdigest()
            answer = requests.post(url, data=body, timeout=10, headers={"Content-Type": "application/json",
                                                                         "X-Hub-Signature-256": signature})
        return answer


class _SmsFake:
    def __init__(self):
        self.failures = _Failures()
        self._lock = threading.Lock()
        self.messages: list[dict] = []  # {"id", "to", "body", "sender", "correlation_id"}
        self.refused: list[dict] = []
        self._ids = itertools.count(3_000_000_001)

    def fail(self, *errors, to: str | None = None) -> None:
        self.failures.add(to, *errors)

    def _sent(self, message_id: str) -> dict:
        return next((m for m in self.messages if m["id"] == str(message_id)), {})

    def _accept(self, to: str, body: str, sender: str, correlation_id: str = "") -> str:
        with self._lock:
            message_id = str(next(self._ids))
            self.messages.append({"id": message_id, "to": to, "body": body, "sender": sender,
                                  "correlation_id": correlation_id})
        return message_id


class UnifonicFake(_SmsFake):
    def __init__(self, app_sid: str = "fake-unifonic-appsid"):
        super().__init__()
        self.app_sid = app_sid
        self.string_success = False  # True: `"success": "true"`, as the bulk endpoint documents it

    def dlr_payload(self, message_id: str, state: str, as_json: bool = False) -> dict:
        """unifonic.json's delivery report (the documented form, state in `DLR`), or the JSON a
        console can send (`Status`, `CorrelationID`), for a message this fake accepted."""
        sent = self._sent(message_id)
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        if as_json:
            report = documented("unifonic")["delivery_report_json"]
            report.update(MessageID=str(message_id), CorrelationID=sent.get("correlation_id", ""), Status=state)
        else:
            report = documented("unifonic")["delivery_report"]
            report.update(MessageID=str(message_id), DLR=state, SCTS=now)
        report.update(Recipient=sent.get("to", ""), TimeCreated=now, DLRTimestamp=now)
        return report

    def send_dlr(self, url: str, message_id: str, status: str, as_json: bool = False) -> requests.Response:
        report = self.dlr_payload(message_id, status, as_json)
        if as_json:
            return requests.post(url, json=report, timeout=10)
        return requests.post(url, data=report, timeout=10)

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
                error = documented("unifonic")["send_error"]
                error.update(message=UNIFONIC_ERRORS[code], errorCode=code)
                return jsonify(error)
            message_id = self._accept(to, body, form.get("SenderID", ""), form.get("CorrelationID", ""))
            units = len(body.encode("utf-16-le")) // 2
            fixture = documented("unifonic")
            answer = fixture["send_answer"]
            if self.string_success:
                answer["success"] = fixture["send_answer_string_success"]["success"]
            answer["data"].update(MessageID=int(message_id), CorrelationID=form.get("CorrelationID", ""),
                                  NumberOfUnits=1 if units <= 70 else -(-units // 67), Recipient=to,
                                  TimeCreated=time.strftime("%Y-%m-%d %H:%M:%S"))
            return jsonify(answer)

        return app


class TaqnyatFake(_SmsFake):
    def __init__(self, token: str = "fake-taqnyat-bearer-token"):
        super().__init__()
        self.token = token
        self._rejected: set[str] = set()

    def reject(self, to: str) -> None:
        self._rejected.add(to.lstrip("+"))

    def send_dlr(self, url: str, message_id: str, status: str) -> requests.Response:
        report = documented("taqnyat")["delivery_report"]  # not documented by Taqnyat: see the fixture
        report.update(messageId=str(message_id), status=status.lower())
        return requests.post(url, json=report, timeout=10)

    def app(self) -> Flask:
        app = Flask("fake-taqnyat")

        def error(status: int, message: str):
            answer = documented("taqnyat")["send_error"]
            answer.update(statusCode=status, message=message)
            return jsonify(answer), status

        @app.post("/v1/messages")
        def send():
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return error(401, "Unauthorized: the bearer token is not valid")
            body = request.get_json(silent=True) or {}
            recipients = [str(r) for r in body.get("recipients", [])]
            to = recipients[0] if recipients else ""
            status = self.failures.take(to)
            if status is not None:
                with self._lock:
                    self.refused.append({"code": status, "to": to})
                return error(status, "Injected failure")
            if not body.get("body") or not recipients or not body.get("sender"):
                return error(400, "recipients, body and sender are required")
            accepted = [r for r in recipients if r not in self._rejected]
            message_id = self._accept(to, body["body"], body["sender"]) if accepted else str(next(self._ids))
            answer = documented("taqnyat")["send_answer"]
            answer.update(messageId=int(message_id), totalCount=len(recipients),
                          accepted="[" + "".join(f"{r}," for r in accepted) + "]",
                          rejected="[" + "".join(f"{r}," for r in recipients if r in self._rejected) + "]")
            return jsonify(answer), 201

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
