"""What providers and shoppers send back: delivery statuses and unsubscribes.

- `GET/POST /channels/whatsapp/status`: the app's WhatsApp webhook (WHATSAPP_VERIFY_TOKEN for
  Meta's `hub.challenge` handshake, WHATSAPP_APP_SECRET for `X-Hub-Signature-256` on the raw
  body). A status names its reminder in `biz_opaque_callback_data` (`<merchant>:<reminder id>`).
  `/channels/whatsapp/<merchant>/status` is the same for a store with its own Meta app (its own
  `whatsapp.verify_token` and `whatsapp.app_secret`); there the message id alone is enough.
- `POST /channels/sms/<merchant>/dlr/<token>`: SMS delivery reports (Unifonic, Taqnyat), JSON or
  form, the message id in MessageID/messageId/message_id/msgId and the status in
  Status/status/dlr. The token (service/unsubscribe.py) is the URL's secret: providers sign nothing.
- `GET /unsubscribe/<token>` shows a small page with one button; `POST` (the button, or a mail
  client's RFC 8058 one-click) records the opt-out: the profile says so from then on (whatever
  Salla's flag says later) and the customer's pending reminders are cancelled.

Statuses go to the ledger (workers/ledger.py `record_status`): any order, never backwards.
A failure of the channel that sent a reminder, not after it was delivered, goes on to
workers/fallback.py: under `first` the reminder moves on to the store's next channel.
Provider callbacks always get 200 once verified, so that a status we cannot place is not retried
for days; what was applied is counted in the answer.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from service.celery_config import DELIVER_TASK
from service.channel_settings import ChannelSettings
from service.stores import ConfigError
from service.unsubscribe import callback_token_valid, read_token
from workers.due_set import DueSet
from workers.ledger import Ledger
from workers.profiles import Profiles
from workers.fallback import classify_sms, classify_whatsapp, handle_late_failure
from workers.reminding import cancel_pending

log = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__)

WHATSAPP_STATUSES = ("sent", "delivered", "read", "failed")
SMS_STATUSES = {"delivered": "delivered", "delivrd": "delivered", "sent": "sent", "accepted": "sent",
                "queued": "sent", "failed": "failed", "undeliverable": "failed", "undeliv": "failed",
                "expired": "failed", "rejected": "failed", "rejectd": "failed"}


class _Parts:
    def __init__(self, deps):
        prefix = deps.settings.redis_key_prefix
        self.ledger = Ledger(deps.redis, prefix)
        self.due = DueSet(deps.redis, prefix, shards=deps.settings.due_set_shards)
        self.profiles = Profiles(deps.redis, prefix)
        self.channel_settings = ChannelSettings(deps.redis, prefix, deps.settings)


def _deps():
    deps = current_app.extensions["reminder_service"]
    if "reminder_callbacks" not in current_app.extensions:
        current_app.extensions["reminder_callbacks"] = _Parts(deps)
    return deps, current_app.extensions["reminder_callbacks"]


@bp.errorhandler(redis.RedisError)
def redis_down(exc):
    return jsonify(error="unavailable", message=type(exc).__name__), 503


# -- WhatsApp --------------------------------------------------------------------------------
def _store_whatsapp(parts, merchant_id: int) -> dict:
    try:
        return parts.channel_settings.effective(merchant_id).of("whatsapp")
    except ConfigError:
        return {}


@bp.get("/channels/whatsapp/status")
@bp.get("/channels/whatsapp/<int:merchant_id>/status")
def whatsapp_handshake(merchant_id: int | None = None):
    deps, parts = _deps()
    expected = deps.settings.whatsapp_verify_token if merchant_id is None else \
        _store_whatsapp(parts, merchant_id).get("verify_token", "")
    given = request.args.get("hub.verify_token", "")
    if request.args.get("hub.mode") != "subscribe" or not expected or \
            not hmac.compare_digest(given.encode(), expected.encode()):
        return jsonify(error="forbidden", message="verify token missing or wrong"), 403
    return Response(request.args.get("hub.challenge", ""), mimetype="text/plain")


@bp.post("/channels/whatsapp/status")
@bp.post("/channels/whatsapp/<int:merchant_id>/status")
def whatsapp_status(merchant_id: int | None = None):
    deps, parts = _deps()
    body = request.get_data(cache=False)
    secret = deps.settings.whatsapp_app_secret if merchant_id is None else \
        _store_whatsapp(parts, merchant_id).get("app_secret", "")
    given = request.headers.get("X-Hub-Signature-256", "")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest() if secret else ""
    if not secret or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("WhatsApp status webhook refused: X-Hub-Signature-256 %s (%d bytes)",
                    "missing" if not given else "does not match", len(body))
        return jsonify(error="unauthorized", message="X-Hub-Signature-256 missing or wrong"), 401
    try:
        payload = json.loads(body)
    except ValueError:
        return jsonify(error="bad_request", message="body is not JSON"), 400
    applied, unknown = 0, 0
    for status in _whatsapp_statuses(payload):
        where = _whatsapp_reminder(parts, status, merchant_id)
        if where is None or status.get("status") not in WHATSAPP_STATUSES:
            unknown += 1
            continue
        m, rid = where
        failure = classify_whatsapp(status.get("errors")) if status["status"] == "failed" else None
        outcome = parts.ledger.record_status(m, rid, "whatsapp", status["status"],
                                             reason=failure.reason if failure else "",
                                             at=str(status.get("timestamp", "")))
        if failure is not None and outcome not in ("missing", "unknown", "kept"):
            _late_failure(deps, parts, m, rid, "whatsapp", failure)
        applied += outcome not in ("missing", "unknown")
        unknown += outcome in ("missing", "unknown")
    return jsonify(applied=applied, unknown=unknown)


def _whatsapp_statuses(payload) -> list[dict]:
    def items(holder, name: str) -> list:
        # holder[name] when holder is an object and that is a list; else none (a signed body is
        # still the sender's to shape: `"entry": null` is no reason for a 500).
        value = holder.get(name) if isinstance(holder, dict) else None
        return value if isinstance(value, list) else []

    found = []
    for entry in items(payload, "entry"):
        for change in items(entry, "changes"):
            value = change.get("value") if isinstance(change, dict) else None
            found.extend(status for status in items(value, "statuses") if isinstance(status, dict))
    return found


def _whatsapp_reminder(parts, status: dict, merchant_id: int | None) -> tuple[int, str] | None:
    opaque = status.get("biz_opaque_callback_data")
    if isinstance(opaque, str) and ":" in opaque:
        m, _, rid = opaque.partition(":")
        if m.isdigit() and (merchant_id is None or int(m) == merchant_id):
            return int(m), rid
    if merchant_id is not None and isinstance(status.get("id"), str):
        rid = parts.ledger.find_message(merchant_id, "whatsapp", status["id"])
        if rid:
            return merchant_id, rid
    return None


# -- SMS delivery reports -----------------------------------------------------------------------
def _field(data: dict, *names: str) -> str:
    for name in names:
        value = data.get(name)
        if value not in (None, ""):
            return str(value)
    return ""


@bp.post("/channels/sms/<int:merchant_id>/dlr/<token>")
def sms_delivery_report(merchant_id: int, token: str):
    deps, parts = _deps()
    if not callback_token_valid(deps.settings.token_encryption_keys, merchant_id, token):
        return jsonify(error="not_found", message="no such report URL"), 404
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        data = request.form.to_dict() or request.args.to_dict()
    message_id = _field(data, "MessageID", "messageId", "message_id", "msgId", "id")
    raw_status = _field(data, "Status", "status", "dlr", "DLR").strip().lower()
    status = SMS_STATUSES.get(raw_status)
    rid = parts.ledger.find_message(merchant_id, "sms", message_id) if message_id else None
    if rid is None or status is None:
        return jsonify(applied=0, unknown=1)
    failure = classify_sms(raw_status) if status == "failed" else None
    outcome = parts.ledger.record_status(merchant_id, rid, "sms", status, reason=failure.reason if failure else "",
                                         at=f"{time.time():.0f}")
    if failure is not None and outcome not in ("missing", "unknown", "kept"):
        _late_failure(deps, parts, merchant_id, rid, "sms", failure)
    return jsonify(applied=int(outcome not in ("missing", "unknown")), unknown=int(outcome in ("missing", "unknown")))


# -- a late failure: on to the next channel ---------------------------------------------------
def _late_failure(deps, parts, merchant_id: int, reminder_id: str, channel: str, failure) -> None:
    """workers/fallback.py decides and applies it. The provider still gets its 200: a status we
    could not act on now is not one it should send again for days (the ledger keeps it)."""
    try:
        effective = parts.channel_settings.effective(merchant_id)
    except ConfigError as exc:
        log.warning("reminder %s: late %s failure recorded; store %s channel settings unreadable (%s)",
                    reminder_id, channel, merchant_id, type(exc).__name__)
        return

    def publish(m: int, c: int, rid: str) -> None:
        deps.queue.publish(DELIVER_TASK, [m, c, rid])

    settings = deps.settings
    handle_late_failure(parts.ledger, parts.due, merchant_id, reminder_id, channel, failure,
                        list(effective.channels), effective.policy, time.time(), settings.store_timezone,
                        settings.quiet_hours, publish)


# -- unsubscribe --------------------------------------------------------------------------------
_PAGE = """<!DOCTYPE html>
<html lang="ar" dir="rtl"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>إلغاء الاشتراك · Unsubscribe</title></head>
<body dir="rtl" style="font-family:Tahoma,Arial,sans-serif;max-width:480px;margin:40px auto;padding:0 16px;line-height:1.8">
{body}
</body></html>"""
_ASK = """<p>هل تريد إيقاف تذكيرات نقاط الولاء؟</p>
<p dir="ltr" style="text-align:left">Stop loyalty points reminders?</p>
<form method="post"><button type="submit" style="font-size:16px;padding:8px 20px">إيقاف · Stop</button></form>"""
_DONE = """<p>تم إيقاف تذكيرات نقاط الولاء. لن تصلك رسائل أخرى منا.</p>
<p dir="ltr" style="text-align:left">Loyalty points reminders are stopped. You will get no more of them.</p>"""
_BAD = """<p>هذا الرابط غير صالح.</p><p dir="ltr" style="text-align:left">This link is not valid.</p>"""


@bp.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    deps, _ = _deps()
    if read_token(deps.settings.token_encryption_keys, token) is None:
        return Response(_PAGE.format(body=_BAD), status=404, mimetype="text/html")
    return Response(_PAGE.format(body=_ASK), mimetype="text/html")


@bp.post("/unsubscribe/<token>")
def unsubscribe(token: str):
    deps, parts = _deps()
    found = read_token(deps.settings.token_encryption_keys, token)
    if found is None:
        return Response(_PAGE.format(body=_BAD), status=404, mimetype="text/html")
    m, c = found
    now = time.time()
    if parts.profiles.unsubscribe(m, c, now):
        deps.registry.count(m, "unsubscribed")
        cancelled = cancel_pending(parts.ledger, parts.due, deps.redis, deps.keys, m, c, now)
        log.info("merchant=%s customer=%s unsubscribed by link; %d pending reminder(s) cancelled", m, c, cancelled)
    return Response(_PAGE.format(body=_DONE), mimetype="text/html")
