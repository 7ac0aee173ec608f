"""POST /webhooks/salla: verify, read, drop repeats, enqueue, answer within milliseconds.

Salla counts only 200/201 as delivered and retries anything else 3 more times, about
5 minutes apart. So an event we do not act on still gets 200, and only a failure to store
the event (Redis or the broker down) answers non-2xx, so that Salla tries again.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timezone

import redis
from flask import Blueprint, current_app, jsonify, request

from service.config import metrics
from service.config.celery_config import DRAIN_TASK, FORGET_STORE_TASK, STORE_AUTHORIZED_TASK
from service.domain.events import Envelope, EventError, customer_of, event_time, is_handled, parse_envelope
from service.state.intake import PUBLISH, REPEAT
from service.config.logs import correlation_id
from service.clients.queue import QueueUnavailable
from service.domain.signatures import verify_delivery
from service.state.stores import ACTIVE, NEEDS_REAUTH, UNINSTALLED
from service.state.tokens import TokenError, token_lock, tokens_from

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


def _reply(code: int, **body):
    return jsonify(body), code


def _counted(event: str | None, outcome: str, code: int, **body):
    metrics.count_webhook(event, outcome)
    return _reply(code, **body)


# The two answers of nearly every webhook, as jsonify writes them, made once: jsonify took
# about a third as long as the whole webhook's own work besides Redis (bench/ingest.py).
_QUEUED = b'{"status":"queued"}\n'
_DUPLICATE = b'{"status":"duplicate"}\n'


def _answered(event: str, outcome: str, body: bytes):
    metrics.count_webhook(event, outcome)
    return current_app.response_class(body, 200, content_type="application/json")


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
        return _counted(None, metrics.SIGNATURE_FAILED, 401, error="unauthorized",
                        message=f"webhook {settings.webhook_strategy} verification failed")

    envelope = None
    try:
        envelope = parse_envelope(body)
        if envelope.event in APP_EVENTS:
            response, code = APP_EVENTS[envelope.event](deps, envelope)
            outcome = {200: metrics.APPLIED, 400: metrics.BAD_REQUEST, 503: metrics.UNAVAILABLE}.get(code, str(code))
            if code == 200 and (response.get_json(silent=True) or {}).get("status") == "ignored":
                outcome = metrics.IGNORED
            metrics.count_webhook(envelope.event, outcome)
            return response, code
        if not is_handled(envelope.event):
            return _counted(envelope.event, metrics.IGNORED, 200, status="ignored",
                            reason=f"event {envelope.event} is not acted on")
        customer = customer_of(envelope)
    except EventError as exc:
        log.info("webhook refused: %s", exc)
        return _counted(envelope.event if envelope else None, metrics.BAD_REQUEST, 400, error="bad_request",
                        message=str(exc))
    if customer is None:
        return _counted(envelope.event, metrics.IGNORED, 200, status="ignored", reason="event names no customer")

    # Salla sends no delivery id: the same bytes twice are the same delivery. The event is
    # kept in Redis until a worker has handled it (service/state/intake.py); the broker's message
    # carries only its store and its digest.
    digest = hashlib.sha256(body).hexdigest()
    message = {
        "event": envelope.event,
        "merchant_id": envelope.merchant_id,
        "customer": customer.to_dict(),
        "event_created_at": envelope.created_at,
        "received_at": datetime.now(timezone.utc).isoformat(),
        # Follows the event through its read and each delivery (service/config/logs.py): an id, nothing personal.
        "cid": correlation_id.get(),
    }
    try:
        stored = deps.intake.accept(envelope.merchant_id, digest, message, settings.webhook_dedupe_ttl_seconds,
                                    time.time())
    except redis.RedisError as exc:
        log.error("webhook not stored, Redis unavailable: %s", type(exc).__name__)
        return _counted(envelope.event, metrics.UNAVAILABLE, 503, error="unavailable",
                        message="storage unavailable, retry later")
    if stored == REPEAT:
        log.info("webhook %s of merchant=%s customer=%s: a repeat, dropped", envelope.event, envelope.merchant_id,
                 customer.id)
        return _answered(envelope.event, metrics.DUPLICATE, _DUPLICATE)
    if stored == PUBLISH:  # no drain of this store's inbox is on its way: send one
        try:
            deps.queue.enqueue({"merchant_id": envelope.merchant_id}, task=DRAIN_TASK)
        except QueueUnavailable as exc:
            # Forget the delivery so that Salla's retry is not taken for a repeat.
            try:
                deps.intake.withdraw(envelope.merchant_id, digest)
            except redis.RedisError:
                log.error("could not withdraw the event after a failed enqueue; it is handled when the broker is "
                          "back (the inbox's recovery), and Salla's retry is dropped as a repeat")
            log.error("webhook not enqueued: %s", exc)
            return _counted(envelope.event, metrics.UNAVAILABLE, 503, error="unavailable",
                            message="queue unavailable, retry later")
    # DEBUG: at INFO, a line per webhook took about a fifth of the web's time under a burst
    # (bench/ingest.py). The drain logs each event at INFO under this webhook's correlation id
    # (workers/sync.py), and lpr_webhooks_total counts them; refusals and failures log above.
    log.debug("webhook %s of merchant=%s customer=%s accepted", envelope.event, envelope.merchant_id, customer.id)
    return _answered(envelope.event, metrics.QUEUED, _QUEUED)


# App events carry the store's OAuth tokens. They are handled here, not in a worker, so that
# tokens never travel through the broker (or show in Flower): one encrypted SET and done.
# Both run under the store's token lock (the one a refresh holds) and in the order of their
# created_at: a delayed retry of an older event never undoes a newer one (an old
# app.uninstalled arriving after a re-install must not delete the fresh tokens).
class _Stale(Exception):
    pass


def _in_order(deps, merchant_id: int, envelope: Envelope) -> float:
    """Record this app event's time, or raise _Stale when a newer app event was applied."""
    moment = event_time(envelope.created_at)
    if moment is None:
        moment = time.time()  # no readable created_at: the best we know is "now"
    key = deps.keys.store(merchant_id).app_event_at
    last = deps.redis.get(key)
    if last is not None and float(last) > moment:
        raise _Stale()
    deps.redis.set(key, f"{moment:.3f}")
    return moment


def _under_token_lock(deps, merchant_id: int, action):
    lock = token_lock(deps.redis, deps.settings.redis_key_prefix, merchant_id, wait=10)
    try:
        if not lock.acquire():
            # A refresh holds the lock for longer than Salla waits: let Salla retry.
            return _reply(503, error="unavailable", message="tokens are being refreshed, retry later")
        return action()
    except _Stale:
        log.info("app event for merchant=%s is older than one already applied; ignored", merchant_id)
        return _reply(200, status="ignored", reason="older than an app event already applied")
    except (redis.RedisError, QueueUnavailable) as exc:
        log.error("app event of merchant=%s not processed: %s", merchant_id, type(exc).__name__)
        return _reply(503, error="unavailable", message="storage unavailable, retry later")
    finally:
        try:
            if lock.owned():
                lock.release()
        except redis.RedisError:
            pass  # the lock expires by itself


def _authorize(deps, envelope: Envelope):
    merchant_id = envelope.merchant_id
    try:
        tokens = tokens_from(envelope.data, time.time())
    except TokenError as exc:
        return _reply(400, error="bad_request", message=f"app.store.authorize: {exc}")

    def apply():
        state = deps.registry.state(merchant_id).get("state")
        try:
            stored = deps.tokens.load(merchant_id)
        except TokenError:
            stored = None  # unreadable under the current keys: the new tokens replace them
        # A delayed retry of an older authorize must not replace newer (refreshed) tokens,
        # unless the store was uninstalled or lost its authorization since.
        if stored and state == ACTIVE and stored.expires_at > tokens.expires_at:
            log.info("app.store.authorize for merchant=%s is older than the stored tokens; kept them", merchant_id)
            return _reply(200, status="ignored", reason="older than the stored tokens")
        _in_order(deps, merchant_id, envelope)
        deps.tokens.save(merchant_id, tokens)
        if tokens.has_scope("customers.read"):
            deps.registry.set_state(merchant_id, ACTIVE)
        else:
            deps.registry.set_state(merchant_id, NEEDS_REAUTH, "the customers.read scope was not granted")
        log.info("stored Salla tokens for merchant=%s (scope: %s)", merchant_id, tokens.scope or "none given")
        # A worker reads the store's app settings and starts the backfill of its customers.
        # Published after the tokens are stored: a failure is a 503, and Salla's retry of the
        # same authorize stores the same tokens again.
        deps.queue.enqueue({"merchant_id": merchant_id}, task=STORE_AUTHORIZED_TASK)
        return _reply(200, status="stored")

    return _under_token_lock(deps, merchant_id, apply)


def _uninstalled(deps, envelope: Envelope):
    merchant_id = envelope.merchant_id

    def apply():
        moment = _in_order(deps, merchant_id, envelope)
        deps.tokens.delete(merchant_id)
        deps.registry.set_state(merchant_id, UNINSTALLED)
        # The worker erases the store's data, unless a newer app event arrives first.
        deps.queue.enqueue({"merchant_id": merchant_id, "uninstalled_at": moment}, task=FORGET_STORE_TASK)
        log.info("merchant=%s uninstalled the app: tokens deleted, its data is being erased", merchant_id)
        return _reply(200, status="uninstalled")

    return _under_token_lock(deps, merchant_id, apply)


def _settings_updated(deps, envelope: Envelope):
    """The merchant saved the app's settings form in the Salla dashboard. Each field is checked
    on its own (service/state/stores.py apply_form): valid ones apply, invalid ones are kept out and
    shown to the operator. No tokens and no network here: a few Redis writes."""
    merchant_id = envelope.merchant_id
    data = envelope.data
    values = data.get("settings", data)  # Salla's data.settings; a flat data object is read too
    if not isinstance(values, dict):
        return _reply(400, error="bad_request", message="app.settings.updated: data.settings must be an object")
    if deps.registry.is_uninstalled(merchant_id):
        return _reply(200, status="ignored", reason="the store uninstalled the app")
    moment = event_time(envelope.created_at) or time.time()
    try:
        outcome = deps.registry.apply_form(merchant_id, values, moment, "app.settings.updated")
    except redis.RedisError as exc:
        log.error("app settings of merchant=%s not stored: %s", merchant_id, type(exc).__name__)
        return _reply(503, error="unavailable", message="storage unavailable, retry later")
    if outcome.get("rejected"):
        log.warning("merchant=%s app settings: refused %s", merchant_id, ", ".join(sorted(outcome["rejected"])))
    return _reply(200, status="applied", **{k: v for k, v in outcome.items() if k != "ignored"},
                  **({"ignored": outcome["ignored"]} if "ignored" in outcome else {}))


APP_EVENTS = {"app.store.authorize": _authorize, "app.uninstalled": _uninstalled,
              "app.settings.updated": _settings_updated}
