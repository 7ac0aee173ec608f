"""/admin/*: what operators need to see and set per store. Bearer ADMIN_TOKEN; off when unset.

Never shows a token: a store's summary says whether it has tokens and when they expire.
"""
from __future__ import annotations

import hmac

import redis
from flask import Blueprint, abort, current_app, jsonify, request

from service.tokens import TokenError

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin_token():
    expected = current_app.extensions["reminder_service"].settings.admin_token
    if not expected:
        abort(404)  # the admin API is off: don't even say it exists
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        abort(401, description="admin token missing or wrong")


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


@bp.get("/stores")
def stores():
    deps = current_app.extensions["reminder_service"]
    try:
        return jsonify(stores=[store_summary(deps.registry, deps.tokens, m) for m in deps.registry.merchants()])
    except redis.RedisError as exc:
        return jsonify(error="unavailable", message=type(exc).__name__), 503


@bp.get("/stores/<int:merchant_id>")
def store(merchant_id: int):
    deps = current_app.extensions["reminder_service"]
    return jsonify(store_summary(deps.registry, deps.tokens, merchant_id))


@bp.put("/stores/<int:merchant_id>")
def configure_store(merchant_id: int):
    """Per-store settings: plan_limit (Salla plan: 120/360/720), point_value_sar, paused (0/1)."""
    deps = current_app.extensions["reminder_service"]
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="bad_request", message="send a JSON object of settings"), 400
    try:
        config = deps.registry.set_config(merchant_id, **body)
    except (ValueError, TypeError) as exc:
        return jsonify(error="bad_request", message=str(exc)), 400
    return jsonify(merchant_id=merchant_id, config=config)


def outcome_stats(store, prefix: str, merchant_id: int) -> dict:
    """Per stage: reminders_sent, points_reminded, points_saved, points_lost, redeemed_before_reminder
    (stage "0" holds per-customer counts such as opted_out_cancelled)."""
    result: dict[str, dict[str, int]] = {}
    for name, value in store.hgetall(f"{prefix}stats:{merchant_id}").items():
        name = name.decode() if isinstance(name, bytes) else name
        stage, _, metric = name.partition(":")
        result.setdefault(stage, {})[metric] = int(value)
    return result


@bp.get("/stats")
def stats():
    deps = current_app.extensions["reminder_service"]
    prefix = deps.settings.redis_key_prefix
    return jsonify(stores={str(m): outcome_stats(deps.redis, prefix, m) for m in deps.registry.merchants()})


@bp.get("/stores/<int:merchant_id>/stats")
def store_stats(merchant_id: int):
    deps = current_app.extensions["reminder_service"]
    return jsonify(merchant_id=merchant_id, stages=outcome_stats(deps.redis, deps.settings.redis_key_prefix, merchant_id))
