"""/admin/*: what operators need to see and set per store. Bearer ADMIN_TOKEN (32 characters or
more; off otherwise), on ADMIN_PORT when set, failed attempts rate-limited per address, every
change audited (service/ops/admin_guard.py).

Never shows a token: a store's summary says whether it has tokens and when they expire.
The ledger and due-set modules it uses are plain Redis code (no Celery, no worker runtime).
"""
from __future__ import annotations

import hmac
import logging
import time

import redis
import requests
from flask import Blueprint, abort, current_app, jsonify, request

from service.ops import admin_guard
from service.state import holdout
from service.web import health
from service.config import metrics
from service.config.celery_config import PUMP_TASK
from service.state.channel_settings import ChannelSettings
from service.clients.queue import QueueUnavailable
from service.state.stores import ConfigError
from service.ops import backfill, dead_letters as dead_letter_actions, personal_data, preview as previews
from service.ops.admin_views import (channels_view, dead_letters, outcome_stats, start_backfill,  # shared with the CLI
                                     store_summary, templates_view)
from service.clients.channels import ChannelDirectory, DeliveryPermanentError, DeliveryTransientError
from service.state.due_set import DueSet
from service.state.ledger import Ledger, status_counts

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/admin")


def on_admin_port(settings) -> bool:
    """With ADMIN_PORT set, /admin/* lives on that port only (the listener's, not the Host header's)."""
    return settings.admin_port is None or request.environ.get("SERVER_PORT") == str(settings.admin_port)


@bp.before_request
def require_admin_token():
    settings = _deps().settings
    expected = settings.admin_token
    if admin_guard.admin_off_reason(expected) or not on_admin_port(settings):
        abort(404)  # the admin API is off, or not on this port: don't even say it exists
    attempts = _attempts()
    ip = request.remote_addr or "unknown"
    wait = attempts.blocked_for(ip, admin_guard.now())
    if wait:
        metrics.ADMIN_AUTH_FAILURES.labels("rate_limited").inc()
        response = jsonify(error="too_many_requests",
                           message=f"too many failed admin logins from this address; retry in {wait:.0f}s")
        response.headers["Retry-After"] = str(int(wait + 0.999))
        return response, 429
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        attempts.record(ip, admin_guard.now())
        metrics.ADMIN_AUTH_FAILURES.labels("wrong_token" if given else "no_token").inc()
        log.warning("admin API: %s token from %s for %s %s", "wrong" if given else "no", ip, request.method,
                    request.path)
        abort(401, description="admin token missing or wrong")
    request.environ["lpr.admin_token_id"] = admin_guard.token_id(expected)


@bp.after_request
def audit_changes(response):
    """Every change that passed the token check is audited, whatever it answered; so is every
    read of personal data (views marked admin_guard.reads_personal_data)."""
    who = request.environ.get("lpr.admin_token_id")
    personal = getattr(current_app.view_functions.get(request.endpoint), "reads_personal_data", False)
    if who and (request.method in admin_guard.CHANGES or personal):
        entry = admin_guard.audit_entry(request, response.status_code, who, admin_guard.now())
        if personal:
            entry["access"] = admin_guard.PERSONAL_DATA_READ
        try:
            _audit().record(entry)
        except redis.RedisError as exc:  # the change itself was made or refused already; say so loudly
            log.error("admin %s %s %s not audited in Redis (%s)", entry.get("access", "change"), request.method,
                      request.path, type(exc).__name__)
            if personal:  # a read can still be refused: no unaudited read of personal data
                refused = jsonify(error="unavailable", message="the read could not be audited; retry later")
                refused.status_code = 503
                return refused
    return response


def _attempts() -> admin_guard.FailedAttempts:
    deps = _deps()
    return admin_guard.FailedAttempts(deps.redis, deps.settings.redis_key_prefix,
                                      deps.settings.admin_auth_failures_per_minute)


def _audit() -> admin_guard.AuditLog:
    deps = _deps()
    return admin_guard.AuditLog(deps.redis, deps.settings.redis_key_prefix, deps.settings.admin_audit_keep)


@bp.get("/audit")
def audit():
    """The newest changes first; ?limit=N (default 100, at most ADMIN_AUDIT_KEEP)."""
    text = request.args.get("limit", "100")
    if not text.isdigit() or not 0 < int(text) <= _deps().settings.admin_audit_keep:
        return jsonify(error="bad_request",
                       message=f"limit must be a number from 1 to {_deps().settings.admin_audit_keep}"), 400
    return jsonify(entries=_audit().latest(int(text)))


@bp.errorhandler(redis.RedisError)
def redis_down(exc):
    return jsonify(error="unavailable", message=type(exc).__name__), 503


def _deps():
    return current_app.extensions["reminder_service"]


@bp.get("/stores")
def stores():
    deps = _deps()
    return jsonify(stores=[store_summary(deps.registry, deps.tokens, m, deps.settings) for m in deps.registry.merchants()])


@bp.get("/stores/<int:merchant_id>")
def store(merchant_id: int):
    deps = _deps()
    return jsonify(store_summary(deps.registry, deps.tokens, merchant_id, deps.settings))


@bp.put("/stores/<int:merchant_id>")
def configure_store(merchant_id: int):
    """Per-store settings (service/state/stores.py CONFIG_FIELDS, each with its bounds)."""
    deps = _deps()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="bad_request", message="send a JSON object of settings"), 400
    try:
        config = deps.registry.set_config(merchant_id, **body)
    except ConfigError as exc:
        return jsonify(error="bad_request", message=str(exc)), 400
    return jsonify(merchant_id=merchant_id, config=config)


@bp.get("/stats")
def stats():
    deps = _deps()
    return jsonify(stores={str(m): outcome_stats(deps.redis, deps.keys, m) for m in deps.registry.merchants()})


@bp.get("/stores/<int:merchant_id>/stats")
def store_stats(merchant_id: int):
    deps = _deps()
    return jsonify(merchant_id=merchant_id, stages=outcome_stats(deps.redis, deps.keys, merchant_id))


@bp.get("/stores/<int:merchant_id>/holdout")
def store_holdout(merchant_id: int):
    """What reminders cause: the holdout's effect, interval and points saved (service/state/holdout.py)."""
    deps = _deps()
    return jsonify(merchant_id=merchant_id, **holdout.store_report(deps.redis, deps.settings.redis_key_prefix,
                                                                   merchant_id, deps.settings, time.time()))


# -- the delivery ledger and its dead letters ----------------------------------------------------
def _ledger(deps) -> Ledger:
    return Ledger(deps.redis, deps.settings.redis_key_prefix)


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
    if action not in ("replay", "drop"):
        abort(404, description="the actions are replay and drop")
    if not dead_letter_action(_deps(), merchant_id, reminder_id, action):
        abort(404, description="no such dead letter")
    return jsonify(merchant_id=merchant_id, reminder_id=reminder_id, done=action)


def dead_letter_action(deps, merchant_id: int, reminder_id: str, action: str) -> bool:
    """Replay or drop one dead letter of one store; False when it is not one (the admin API and
    the merchant's embedded page both call this)."""
    act = dead_letter_actions.replay if action == "replay" else dead_letter_actions.drop
    return act(_ledger(deps), DueSet(deps.redis, deps.settings.redis_key_prefix, shards=deps.settings.due_set_shards),
               merchant_id, reminder_id, time.time())


# -- the store's channels, templates and delivery statuses ---------------------------------------
def _channel_settings(deps) -> ChannelSettings:
    return ChannelSettings(deps.redis, deps.settings.redis_key_prefix, deps.settings)


def _directory(deps) -> ChannelDirectory:
    return ChannelDirectory(deps.settings, deps.redis, requests.Session(), deps.registry)


def _bad(exc):
    return jsonify(error="bad_request", message=str(exc)), 400


@bp.get("/stores/<int:merchant_id>/channels")
def get_channels(merchant_id: int):
    deps = _deps()
    try:
        return jsonify(channels_view(_channel_settings(deps), deps.settings, merchant_id))
    except ConfigError as exc:
        return _bad(exc)


@bp.put("/stores/<int:merchant_id>/channels")
def put_channels(merchant_id: int):
    """Order, policy and provider settings; merged into what the store had (service/state/channel_settings.py)."""
    deps = _deps()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="bad_request", message="send a JSON object of channel settings"), 400
    try:
        _channel_settings(deps).update(merchant_id, body)
        return jsonify(channels_view(_channel_settings(deps), deps.settings, merchant_id))
    except ConfigError as exc:
        return _bad(exc)


@bp.get("/stores/<int:merchant_id>/templates")
def get_templates(merchant_id: int):
    return jsonify(merchant_id=merchant_id, templates=templates_view(_channel_settings(_deps()), merchant_id))


@bp.put("/stores/<int:merchant_id>/templates/<name>")
def put_template(merchant_id: int, name: str):
    """The template's source as the body (text/plain), or JSON {"source": ...}; checked before it is kept."""
    body = request.get_json(silent=True)
    source = body.get("source") if isinstance(body, dict) else request.get_data(as_text=True)
    try:
        _channel_settings(_deps()).set_template(merchant_id, name, source)
    except ConfigError as exc:
        return _bad(exc)
    return jsonify(merchant_id=merchant_id, template=name, overridden=True)


@bp.delete("/stores/<int:merchant_id>/templates/<name>")
def delete_template(merchant_id: int, name: str):
    try:
        removed = _channel_settings(_deps()).delete_template(merchant_id, name)
    except ConfigError as exc:
        return _bad(exc)
    return jsonify(merchant_id=merchant_id, template=name, overridden=False, removed=removed)


@bp.get("/stores/<int:merchant_id>/statuses")
def store_statuses(merchant_id: int):
    deps = _deps()
    return jsonify(merchant_id=merchant_id, **status_counts(deps.redis, deps.keys, merchant_id))


@bp.post("/stores/<int:merchant_id>/preview")
@admin_guard.reads_personal_data  # the customer's name and contact, rendered
def preview(merchant_id: int):
    """{"customer_id": C, "channel": X?, "lang": "ar"|"en"?}: what would be sent; nothing is."""
    deps = _deps()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="bad_request", message='send a JSON object: {"customer_id": C}'), 400
    customer = body.get("customer_id")
    if not isinstance(customer, int) or isinstance(customer, bool):
        return jsonify(error="bad_request", message="customer_id must be a number"), 400
    try:
        return jsonify(previews.preview(deps.redis, deps.settings, _directory(deps), merchant_id, customer,
                                        body.get("channel"), body.get("lang")))
    except ConfigError as exc:
        return _bad(exc)


@bp.post("/stores/<int:merchant_id>/send-test")
def send_test(merchant_id: int):
    """{"to": e-mail or +9665..., "channel": X?, "lang": "ar"|"en"?}: one sample reminder, outside the ledger."""
    deps = _deps()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        body = {}  # "to" is missing: the 400 below says what to send
    if not isinstance(body.get("to"), str) or not body["to"].strip():
        return jsonify(error="bad_request", message="to must be an e-mail address or a mobile number"), 400
    try:
        return jsonify(previews.send_test(_directory(deps), merchant_id, body["to"].strip(), body.get("channel"),
                                          body.get("lang")))
    except ConfigError as exc:
        return _bad(exc)
    except (DeliveryPermanentError, DeliveryTransientError) as exc:
        return jsonify(error="not_sent", message=str(exc), reason=getattr(exc, "reason", "transient")), 502


# -- backfill ------------------------------------------------------------------------------------
@bp.post("/stores/<int:merchant_id>/backfill")
def post_backfill(merchant_id: int):
    deps = _deps()
    try:
        started = start_backfill(deps.registry, merchant_id, time.time(), deps.settings.backfill_max_stores)
    except ConfigError as exc:
        return jsonify(error="conflict", message=str(exc)), 409
    try:
        if started.get("state") == "running":  # a store queued for a slot is pumped when it gets one
            # As a wake-up (workers/tasks.py pump_soon): it must not free the store's pump flag.
            deps.queue.publish(PUMP_TASK, [merchant_id, True])
    except QueueUnavailable:
        pass  # the store is in the backlog: beat's pump-backlog starts it within 15 s
    view = backfill.progress(deps.redis, deps.keys, deps.settings, deps.registry.config(merchant_id), merchant_id)
    return jsonify(merchant_id=merchant_id, started=started.get("started") == "1", backfill=view), \
        (202 if started.get("started") == "1" else 200)


@bp.get("/backfills")
def get_backfills():
    """Install storms: the stores backfilling now and those waiting for a slot, in the order they
    will start; ?limit=N of the waiting ones (default 100, at most 10,000)."""
    text = request.args.get("limit", "100")
    if not text.isdigit() or not 0 < int(text) <= 10_000:
        return jsonify(error="bad_request", message="limit must be a number from 1 to 10000"), 400
    deps = _deps()
    return jsonify(backfill.fleet(deps.redis, deps.keys, deps.settings, int(text)))


@bp.get("/stores/<int:merchant_id>/backfill")
def get_backfill(merchant_id: int):
    deps = _deps()
    return jsonify(merchant_id=merchant_id, backfill=backfill.progress(
        deps.redis, deps.keys, deps.settings, deps.registry.config(merchant_id), merchant_id))


# -- personal data (PDPL) ------------------------------------------------------------------------
@bp.get("/stores/<int:merchant_id>/customers/<int:customer_id>/export")
@admin_guard.reads_personal_data
def export_customer(merchant_id: int, customer_id: int):
    deps = _deps()
    try:
        return jsonify(personal_data.export(deps.redis, deps.settings.redis_key_prefix, merchant_id, customer_id,
                                            due_set_shards=deps.settings.due_set_shards))
    except personal_data.UnknownCustomer as exc:
        return jsonify(error="not_found", message=str(exc)), 404


@bp.delete("/stores/<int:merchant_id>/customers/<int:customer_id>")
def forget_customer(merchant_id: int, customer_id: int):
    deps = _deps()
    try:
        return jsonify(personal_data.forget(deps.redis, deps.settings.redis_key_prefix, merchant_id, customer_id,
                                            time.time(), due_set_shards=deps.settings.due_set_shards,
                                            secrets=deps.settings.token_encryption_keys))
    except personal_data.UnknownCustomer as exc:
        return jsonify(error="not_found", message=str(exc)), 404


# -- operator alarms ------------------------------------------------------------------------------
@bp.get("/health")
def health_details():
    """What /readyz tells the public as up or down, with the details: beat, the alarms' texts."""
    return jsonify(health.readiness_details(_deps()))


@bp.get("/alarms")
def alarms():
    return jsonify(alarms=_deps().alarms.active())


@bp.delete("/alarms/<name>")
def clear_alarm(name: str):
    if not _deps().alarms.clear(name):
        abort(404, description="no such alarm")
    return jsonify(cleared=name)
