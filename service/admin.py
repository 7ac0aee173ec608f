"""/admin/*: what operators need to see and set per store. Bearer ADMIN_TOKEN; off when unset.

Never shows a token: a store's summary says whether it has tokens and when they expire.
The ledger and due-set modules it uses are plain Redis code (no Celery, no worker runtime).
"""
from __future__ import annotations

import hmac
import time

import redis
from flask import Blueprint, abort, current_app, jsonify, request

from service.stores import ConfigError
from service.tokens import TokenError
from workers import delivery
from workers.due_set import DueSet
from workers.ledger import Ledger

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin_token():
    expected = current_app.extensions["reminder_service"].settings.admin_token
    if not expected:
        abort(404)  # the admin API is off: don't even say it exists
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        abort(401, description="admin token missing or wrong")


@bp.errorhandler(redis.RedisError)
def redis_down(exc):
    return jsonify(error="unavailable", message=type(exc).__name__), 503


def store_summary(registry, token_store, merchant_id: int) -> dict:
    summary = registry.summary(merchant_id)
    try:
        tokens = token_store.load(merchant_id)
        summary["tokens"] = {"stored": tokens is not None,
                             "expires_at": tokens.expires_at if tokens else None,
                             "scope": tokens.scope if tokens else None}
    except TokenError as exc:
        summary["tokens"] = {"stored": True, "error": str(exc)}
    return summary


def _deps():
    return current_app.extensions["reminder_service"]


@bp.get("/stores")
def stores():
    deps = _deps()
    return jsonify(stores=[store_summary(deps.registry, deps.tokens, m) for m in deps.registry.merchants()])


@bp.get("/stores/<int:merchant_id>")
def store(merchant_id: int):
    deps = _deps()
    return jsonify(store_summary(deps.registry, deps.tokens, merchant_id))


@bp.put("/stores/<int:merchant_id>")
def configure_store(merchant_id: int):
    """Per-store settings (service/stores.py CONFIG_FIELDS, each with its bounds)."""
    deps = _deps()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="bad_request", message="send a JSON object of settings"), 400
    try:
        config = deps.registry.set_config(merchant_id, **body)
    except ConfigError as exc:
        return jsonify(error="bad_request", message=str(exc)), 400
    return jsonify(merchant_id=merchant_id, config=config)


def outcome_stats(store, keys, merchant_id: int) -> dict:
    """Per stage: reminders_sent, points_reminded, points_saved, points_lost, redeemed_before_reminder
    (stage "0" holds per-customer counts such as opted_out_cancelled)."""
    result: dict[str, dict[str, int]] = {}
    for name, value in store.hgetall(keys.store(merchant_id).stats).items():
        name = name.decode() if isinstance(name, bytes) else name
        stage, _, metric = name.partition(":")
        result.setdefault(stage, {})[metric] = int(value)
    return result


@bp.get("/stats")
def stats():
    deps = _deps()
    return jsonify(stores={str(m): outcome_stats(deps.redis, deps.keys, m) for m in deps.registry.merchants()})


@bp.get("/stores/<int:merchant_id>/stats")
def store_stats(merchant_id: int):
    deps = _deps()
    return jsonify(merchant_id=merchant_id, stages=outcome_stats(deps.redis, deps.keys, merchant_id))


# -- the delivery ledger and its dead letters ----------------------------------------------------
def _ledger(deps) -> Ledger:
    return Ledger(deps.redis, deps.settings.redis_key_prefix)


def dead_letters(ledger: Ledger, merchants) -> dict:
    return {str(m): [record.view() for record in ledger.dead_letters(m)] for m in merchants}


@bp.get("/dead-letters")
def all_dead_letters():
    deps = _deps()
    found = dead_letters(_ledger(deps), deps.registry.merchants())
    return jsonify(stores={m: letters for m, letters in found.items() if letters})


@bp.get("/stores/<int:merchant_id>/dead-letters")
def store_dead_letters(merchant_id: int):
    deps = _deps()
    return jsonify(merchant_id=merchant_id, dead_letters=dead_letters(_ledger(deps), [merchant_id])[str(merchant_id)])


@bp.get("/stores/<int:merchant_id>/reminders/<reminder_id>")
def reminder(merchant_id: int, reminder_id: str):
    record = _ledger(_deps()).get(merchant_id, reminder_id)
    if record is None:
        abort(404, description="no such reminder in the ledger")
    return jsonify(record.view())


@bp.post("/stores/<int:merchant_id>/dead-letters/<reminder_id>/<action>")
def act_on_dead_letter(merchant_id: int, reminder_id: str, action: str):
    deps = _deps()
    if action not in ("replay", "drop"):
        abort(404, description="the actions are replay and drop")
    act = delivery.replay if action == "replay" else delivery.drop
    if not act(_ledger(deps), DueSet(deps.redis, deps.settings.redis_key_prefix), merchant_id, reminder_id,
               time.time()):
        abort(404, description="no such dead letter")
    return jsonify(merchant_id=merchant_id, reminder_id=reminder_id, done=action)


# -- operator alarms ------------------------------------------------------------------------------
@bp.get("/alarms")
def alarms():
    return jsonify(alarms=_deps().alarms.active())


@bp.delete("/alarms/<name>")
def clear_alarm(name: str):
    if not _deps().alarms.clear(name):
        abort(404, description="no such alarm")
    return jsonify(cleared=name)
