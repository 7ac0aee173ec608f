"""Liveness and readiness for load balancers and operators."""
from __future__ import annotations

import redis
from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers. Nothing else is checked, so a Redis outage does not get us killed."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to take webhooks: Redis answers. Also shows when beat last ticked, and any
    operator alarm (they need a person, not a restart, so they do not make this 503)."""
    deps = current_app.extensions["reminder_service"]
    try:
        deps.redis.ping()
        last_beat = deps.redis.get(deps.keys.beat_last)
        alarms = {name: alarm.get("message") for name, alarm in deps.alarms.active().items()}
    except redis.RedisError as exc:
        return jsonify(status="unavailable", redis=type(exc).__name__), 503
    return jsonify(status="ready", redis="ok", beat_last_tick=last_beat, alarms=alarms)
