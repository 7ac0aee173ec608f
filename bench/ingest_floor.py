"""The floor for bench/ingest.py: the least a webhook endpoint can do. It checks the HMAC of
the raw body and does one LPUSH, nothing else (no parsing, no dedupe, no broker).
Served by the same gunicorn command as the Procfile's `web`."""
from __future__ import annotations

import hashlib
import hmac
import os

import redis
from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)
    store = redis.Redis.from_url(os.environ["REDIS_URL"])
    secret = os.environ["SALLA_WEBHOOK_SECRET"].encode()

    @app.post("/webhooks/salla")
    def receive():
        body = request.get_data(cache=False)
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, request.headers.get("X-Salla-Signature", "").encode()):
            return jsonify(error="unauthorized"), 401
        store.lpush("floor:events", body)
        return jsonify(status="queued")

    return app
