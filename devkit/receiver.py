"""A local HTTP receiver for the `webhook` reminder channel: what a merchant's system would be.

Records every POST, checks X-Reminder-Signature, and can be told to fail the next N
deliveries (to show retries). Used by the tests and by `make demo`.
"""
from __future__ import annotations

import json
import threading

from flask import Flask, jsonify, request

from service.domain.signatures import signature_matches


class ReminderLog:
    def __init__(self, secret: str):
        self.secret = secret
        self._lock = threading.Lock()
        self._received: list[dict] = []
        self._fail_next: list[int] = []  # status codes to answer before accepting again

    def record(self, body: bytes, headers) -> int:
        with self._lock:
            if self._fail_next:
                return self._fail_next.pop(0)
            self._received.append({
                "signature_valid": signature_matches(body, self.secret, headers.get("X-Reminder-Signature")),
                "reminder_id_header": headers.get("X-Reminder-Id"),
                "idempotency_key": headers.get("Idempotency-Key"),
                "body": json.loads(body),
            })
            return 200

    def fail_next(self, *statuses: int) -> None:
        with self._lock:
            self._fail_next.extend(statuses)

    @property
    def received(self) -> list[dict]:
        with self._lock:
            return list(self._received)


def create_receiver(log: ReminderLog) -> Flask:
    app = Flask("reminder-receiver")

    @app.post("/reminders")
    def receive():
        status = log.record(request.get_data(), request.headers)
        return jsonify(ok=status == 200), status

    @app.get("/reminders")
    def listing():
        return jsonify(log.received)

    return app
