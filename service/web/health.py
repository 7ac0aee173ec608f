"""Liveness and readiness for load balancers and operators."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import redis
from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)
BEAT_STALE_SECONDS = 60


@bp.get("/healthz")
def healthz():
    """The process answers. Nothing else is checked, so a Redis outage does not get us killed."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to take webhooks: Redis answers. Public (load balancers): each dependency up or
    down and nothing more. Operator alarms name stores, templates and provider errors, and the
    admin API's state tells an outsider what to try: they are at GET /admin/health, on the
    admin port behind the admin token (`readiness_details`). Beat and alarms never make this
    503 (they need a person, not a restart)."""
    deps = current_app.extensions["reminder_service"]
    try:
        deps.redis.ping()
        alive = deps.redis.get(deps.keys.beat_alive)
    except redis.RedisError:
        return jsonify(status="unavailable", redis="down"), 503
    view = beat_alive_view(alive, time.time())
    return jsonify(status="ready", redis="up", beat="up" if view and not view["stale"] else "down")


def readiness_details(deps) -> dict:
    """For operators (GET /admin/health): beat's liveness and the alarms with their texts. (Why
    the admin API is off, when it is, is logged once at start: service/web/app.py.)

    Beat, two ways: `beat.alive_at` is written by beat itself as it ticks (workers/beat.py);
    `beat.last_tick` by a worker that ran beat's heartbeat task (beat_last_tick, as before),
    so it also needs the broker and the sweep worker. Raises redis.RedisError when Redis is down."""
    deps.redis.ping()
    last_beat = deps.redis.get(deps.keys.beat_last)
    alive = deps.redis.get(deps.keys.beat_alive)
    alarms = {name: alarm.get("message") for name, alarm in deps.alarms.active().items()}
    beat = {"alive_at": beat_alive_view(alive, time.time()), "last_tick": last_beat}
    return {"status": "ready", "redis": "ok", "beat_last_tick": last_beat, "beat": beat, "alarms": alarms}


def beat_alive_view(raw, now: float) -> dict | None:
    """beat:alive as the time and its age; `stale` past BEAT_STALE_SECONDS (beat writes it every 5 s)."""
    try:
        at = float(raw) if raw is not None else None
    except ValueError:
        at = None
    if at is None:
        return None
    age = max(0.0, now - at)
    return {"at": datetime.fromtimestamp(at, timezone.utc).isoformat(), "age_seconds": round(age, 1),
            "stale": age > BEAT_STALE_SECONDS}
