"""POST /webhooks/salla: verify, read, drop repeats, enqueue, answer within milliseconds.

Salla counts only 200/201 as delivered and retries anything else 3 more times, about
5 minutes apart. So an event we do not act on still gets 200, and only a failure to store
the event (Redis or the broker down) answers non-2xx, so that Salla tries again.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

import redis
from flask import Blueprint, current_app, jsonify, request

from service.events import EventError, customer_of, is_handled, parse_envelope
from service.queue import QueueUnavailable
from service.signatures import verify_delivery

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


def _reply(code: int, **body):
    return jsonify(body), code


@bp.post("/webhooks/salla")
def receive():
    deps = current_app.extensions["reminder_service"]
    settings = deps.settings
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH

    if not verify_delivery(settings.webhook_strategy, settings.webhook_secret, body, request.headers):
        # Loud on purpose: a stale secret after a rotation fails every delivery, and after
        # Salla's retries the events are gone. Never log the body or the headers' values.
        log.warning("webhook rejected: %s verification failed (%d bytes from %s)",
                    settings.webhook_strategy, len(body), request.remote_addr)
        return _reply(401, error="unauthorized", message=f"webhook {settings.webhook_strategy} verification failed")

    try:
        envelope = parse_envelope(body)
        if not is_handled(envelope.event):
            return _reply(200, status="ignored", reason=f"event {envelope.event} is not acted on")
        customer = customer_of(envelope)
    except EventError as exc:
        log.info("webhook refused: %s", exc)
        return _reply(400, error="bad_request", message=str(exc))
    if customer is None:
        return _reply(200, status="ignored", reason="event names no customer")

    # Salla sends no delivery id: the same bytes twice are the same delivery.
    seen_key = f"{settings.redis_key_prefix}webhook:seen:{hashlib.sha256(body).hexdigest()}"
    try:
        first = deps.redis.set(seen_key, "1", nx=True, ex=settings.webhook_dedupe_ttl_seconds)
    except redis.RedisError as exc:
        log.error("webhook not stored, Redis unavailable: %s", type(exc).__name__)
        return _reply(503, error="unavailable", message="storage unavailable, retry later")
    if not first:
        return _reply(200, status="duplicate")

    message = {
        "event": envelope.event,
        "merchant_id": envelope.merchant_id,
        "customer": customer.to_dict(),
        "event_created_at": envelope.created_at,
        "received_at": datetime.now(timezone.utc).isoformat(),
    }
    try:
        deps.queue.enqueue(message)
    except QueueUnavailable as exc:
        # Forget the delivery so that Salla's retry is not taken for a repeat.
        try:
            deps.redis.delete(seen_key)
        except redis.RedisError:
            log.error("could not clear dedupe key after a failed enqueue; the retry will be dropped as a repeat within %ss",
                      settings.webhook_dedupe_ttl_seconds)
        log.error("webhook not enqueued: %s", exc)
        return _reply(503, error="unavailable", message="queue unavailable, retry later")
    log.info("webhook queued: %s merchant=%s customer=%s", envelope.event, envelope.merchant_id, customer.id)
    return _reply(200, status="queued")
