"""Liveness and readiness for load balancers and operators."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import redis
from flask import Blueprint, current_app, jsonify

from service.admin_guard import admin_off_reason

bp = Blueprint("health", __name__)
BEAT_STALE_SECONDS = 60


@bp.get("/healthz")
def healthz():
    """The process answers. Nothing else is checked, so a Redis outage does not get us killed."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to take webhooks: Redis answers. Also shows beat's liveness, the admin API's state
    and any operator alarm (they need a person, not a restart, so they do not make this 503).

    Beat, two ways: `beat.alive_at` is written by beat itself as it ticks (workers/beat.py);
    `beat.last_tick` by a worker that ran beat's heartbeat task (beat_last_tick, as before),
    so it also needs the broker and the sweep worker."""
    deps = current_app.extensions["reminder_service"]
    try:
        deps.redis.ping()
        last_beat = deps.redis.get(deps.keys.beat_last)
        alive = deps.redis.get(deps.keys.beat_alive)
        alarms = {name: alarm.get("message") for name, alarm in deps.alarms.active().items()}
    except redis.RedisError as exc:
        return jsonify(status="unavailable", redis=type(exc).__name__), 503
    beat = {"alive_at": beat_alive_view(alive, time.time()), "last_tick": last_beat}
    admin_off = admin_off_reason(deps.settings.admin_token)
    return jsonify(status="ready", redis="ok", beat_last_tick=last_beat, beat=beat, alarms=alarms,
                   admin="on" if not admin_off else f"off: {admin_off.split(' (')[0]}")


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
