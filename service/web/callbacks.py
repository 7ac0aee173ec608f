"""What providers and shoppers send back: delivery statuses and unsubscribes.

- `GET/POST /channels/whatsapp/status`: the app's WhatsApp webhook (WHATSAPP_VERIFY_TOKEN for
  Meta's `hub.challenge` handshake, WHATSAPP_APP_SECRET for `X-Hub-Signature-256` on the raw
  body). A status finds its reminder by its `wamid` in the cross-store message index
  (service/state/message_index.py): Meta documents `biz_opaque_callback_data` on sent, delivered and
  read, not on failed. `/channels/whatsapp/<merchant>/status` is the same for a store with its own
  Meta app (its own `whatsapp.verify_token` and `whatsapp.app_secret`), for that store's messages only.
- `POST /channels/sms/<merchant>/dlr/<token>`: SMS delivery reports (Unifonic, Taqnyat) of a store
  with its own account; `POST /channels/sms/dlr/<token>`: the one report URL of the environment's
  shared SMS account (a provider has one per account). JSON or form, read by
  service/domain/sms_reports.py (every documented state; the message id, the CorrelationID we sent (the
  reminder id), the state in DLR / Status). Either id finds the reminder in the message index. The token (service/domain/unsubscribe.py) is the URL's secret:
  providers sign nothing. It is signed with the deployment's `links` secret, so a report URL typed
  into a provider's console (and an unsubscribe link in a sent message) outlives a key rotation.
- `GET /unsubscribe/<token>` shows a small page with one button; `POST` (the button, or a mail
  client's RFC 8058 one-click) records the opt-out: the profile says so from then on (whatever
  Salla's flag says later) and the customer's pending reminders are cancelled.

Statuses go to the ledger (service/state/ledger.py `record_status`): any order, never backwards. One
that comes before the worker has recorded its send is kept and applied when the send lands.
A failure of the channel that sent a reminder, not after it was delivered, goes on to
service/ops/fallback.py: under `first` the reminder moves on to the store's next channel.
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

from service.config.celery_config import DELIVER_TASK
from service.state.channel_settings import ChannelSettings
from service.state.message_index import EARLY_STATUS_SECONDS, MessageIndex, correlation_handle, message_handle
from service.domain.store_policy import policy_for
from service.domain.sms_reports import read_report
from service.state.stores import ConfigError
from service.domain.unsubscribe import SHARED_DLR, callback_token_valid, read_token
from service.state.due_set import DueSet
from service.state.ledger import Ledger
from service.state.profiles import Profiles
from service.state.deployment_secrets import link_keys
from service.ops.fallback import classify_sms, classify_whatsapp, handle_late_failure
from service.ops.cancel import cancel_pending

log = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__)

WHATSAPP_STATUSES = ("sent", "delivered", "read", "failed")


class _Parts:
    def __init__(self, deps):
        prefix = deps.settings.redis_key_prefix
        self.ledger = Ledger(deps.redis, prefix)
        self.due = DueSet(deps.redis, prefix, shards=deps.settings.due_set_shards)
        # DATA_RETENTION_DAYS: an unsubscribe click renews the profile's TTL to that, as events do.
        self.profiles = Profiles(deps.redis, prefix, deps.settings.data_retention_days * 86400,
                                 secrets=deps.settings.token_encryption_keys)
        self.channel_settings = ChannelSettings(deps.redis, prefix, deps.settings)
        self.index = MessageIndex(deps.redis, prefix)


def _deps():
    deps = current_app.extensions["reminder_service"]
    if "reminder_callbacks" not in current_app.extensions:
        current_app.extensions["reminder_callbacks"] = _Parts(deps)
    return deps, current_app.extensions["reminder_callbacks"]


def _link_keys(deps) -> tuple:
    """The deployment's `links` secret, then the listed token keys (service/domain/unsubscribe.py)."""
    return link_keys(deps.redis, deps.settings.redis_key_prefix, deps.settings.token_encryption_keys)


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
    outcomes = []
    for status in _whatsapp_statuses(payload):
        if status.get("status") not in WHATSAPP_STATUSES:
            outcomes.append("unknown")
            continue
        wamid = status.get("id") if isinstance(status.get("id"), str) else ""
        item = {"channel": "whatsapp", "status": status["status"], "at": str(status.get("timestamp", ""))[:40]}
        if status["status"] == "failed":  # the codes only: what classify_whatsapp reads, nothing the shopper wrote
            errors = status.get("errors") if isinstance(status.get("errors"), list) else []
            item["errors"] = [{"code": error.get("code")} for error in errors[:1] if isinstance(error, dict)]
        # A message sent before the index existed: the store's own map (named by the URL or by
        # biz_opaque_callback_data, when Meta sends it) holds its wamid.
        opaque = _opaque_merchant(status)
        owner = merchant_id if merchant_id is not None else opaque
        legacy = (owner, wamid) if owner is not None and wamid else None
        outcomes.append(_report(deps, parts, "whatsapp", item, [message_handle(wamid)], merchant_id, legacy))
    return _answer(outcomes)


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


def _opaque_merchant(status: dict) -> int | None:
    opaque = status.get("biz_opaque_callback_data")
    if isinstance(opaque, str) and ":" in opaque:
        m = opaque.partition(":")[0]
        if m.isdigit() and len(m) < 20:
            return int(m)
    return None


# -- SMS delivery reports -----------------------------------------------------------------------
@bp.post("/channels/sms/<int:merchant_id>/dlr/<token>")
def sms_delivery_report(merchant_id: int, token: str):
    """A store's own SMS account: only that store's messages."""
    deps, parts = _deps()
    if not callback_token_valid(_link_keys(deps), merchant_id, token):
        return jsonify(error="not_found", message="no such report URL"), 404
    try:
        provider = parts.channel_settings.effective(merchant_id).of("sms").get("provider") or deps.settings.sms_provider
    except ConfigError:
        provider = deps.settings.sms_provider
    return _sms_report(deps, parts, provider, merchant_id)


@bp.post("/channels/sms/dlr/<token>")
def shared_sms_delivery_report(token: str):
    """The environment's shared SMS account (SMS_*): one report URL for every store on it."""
    deps, parts = _deps()
    if not callback_token_valid(_link_keys(deps), 0, token, purpose=SHARED_DLR):
        return jsonify(error="not_found", message="no such report URL"), 404
    return _sms_report(deps, parts, deps.settings.sms_provider, None)


def _sms_report(deps, parts, provider: str, merchant_id: int | None):
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        data = request.form.to_dict() or request.args.to_dict()
    report = read_report(data)
    if report.status is None:
        return _answer(["unknown"])
    item = {"channel": "sms", "status": report.status, "word": report.word[:40], "at": f"{time.time():.0f}"}
    legacy = (merchant_id, report.message_id) if merchant_id is not None and report.message_id else None
    handles = [message_handle(report.message_id), correlation_handle(report.correlation_id)]
    return _answer([_report(deps, parts, provider, item, handles, merchant_id, legacy)])


# -- from a status to its reminder ------------------------------------------------------------
def _report(deps, parts, provider: str, item: dict, handles: list, merchant_id: int | None,
            legacy: tuple[int, str] | None) -> str:
    """One provider status (`item`: channel, status, the provider's words, at): applied to its
    reminder once its send is recorded, else kept until it is (service/state/message_index.py).
    `merchant_id`: the store whose URL or app it came through (None: a shared one). Returns the
    ledger's outcome, 'early' (kept) or 'unknown'."""
    handles = [handle for handle in handles if handle]
    where = _placed(parts, provider, item["channel"], handles, merchant_id, legacy)
    items = [item]
    if where is None:
        if not handles:
            return "unknown"
        parts.index.keep_early(provider, handles[0], {**item, "merchant": merchant_id})
        where = _placed(parts, provider, item["channel"], handles, merchant_id, legacy)  # landed meanwhile?
        if where is None:
            log.info("%s status %r of a message not recorded (yet): kept %ds for its send", provider,
                     item["status"], EARLY_STATUS_SECONDS)
            return "early"  # the worker applies it when it records the send
        items = [one for one in parts.index.take_early(provider, handles)
                 if one.get("merchant") in (None, where[0]) and one.get("channel") == item["channel"]]
        if not items:
            return "early"  # the worker took it first and applied it
    m, rid = where
    return [_apply(deps, parts, m, rid, one) for one in items][-1]


def _placed(parts, provider: str, channel: str, handles: list, merchant_id: int | None,
            legacy: tuple[int, str] | None) -> tuple[int, str] | None:
    """(merchant, reminder) of a message whose send is recorded; None before (or never)."""
    sent = parts.index.find(provider, handles)
    if sent is not None and sent.channel == channel and merchant_id in (None, sent.merchant_id):
        return sent.merchant_id, sent.reminder_id
    if legacy is not None:  # the store's own map, written in the same step as the send
        rid = parts.ledger.find_message(legacy[0], channel, legacy[1])
        if rid:
            return legacy[0], rid
    return None


def _apply(deps, parts, m: int, rid: str, item: dict) -> str:
    failure = None
    if item.get("status") == "failed":
        failure = classify_whatsapp(item.get("errors")) if item["channel"] == "whatsapp" else \
            classify_sms(str(item.get("word", "")))
    outcome = parts.ledger.record_status(m, rid, item["channel"], str(item.get("status", "")),
                                         reason=failure.reason if failure else "", at=str(item.get("at", "")))
    if failure is not None and outcome not in ("missing", "unknown", "kept"):
        _late_failure(deps, parts, m, rid, item["channel"], failure)
    return outcome


def _answer(outcomes: list[str]):
    """What was applied and what was not placed now (kept ones too: they may never be ours)."""
    unknown = sum(outcome in ("missing", "unknown", "early") for outcome in outcomes)
    return jsonify(applied=len(outcomes) - unknown, unknown=unknown)


# -- a late failure: on to the next channel ---------------------------------------------------
def _late_failure(deps, parts, merchant_id: int, reminder_id: str, channel: str, failure) -> None:
    """service/ops/fallback.py decides and applies it. The provider still gets its 200: a status we
    could not act on now is not one it should send again for days (the ledger keeps it)."""
    try:
        effective = parts.channel_settings.effective(merchant_id)
    except ConfigError as exc:
        log.warning("reminder %s: late %s failure recorded; store %s channel settings unreadable (%s)",
                    reminder_id, channel, merchant_id, type(exc).__name__)
        return

    def publish(m: int, c: int, rid: str) -> None:
        deps.queue.publish(DELIVER_TASK, [m, c, rid])

    policy = policy_for(deps.settings, deps.registry.config(merchant_id))  # the store's own zone and quiet hours
    handle_late_failure(parts.ledger, parts.due, merchant_id, reminder_id, channel, failure,
                        list(effective.channels), effective.policy, time.time(), policy.timezone,
                        policy.quiet_hours, publish)


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
    if read_token(_link_keys(deps), token) is None:
        return Response(_PAGE.format(body=_BAD), status=404, mimetype="text/html")
    return Response(_PAGE.format(body=_ASK), mimetype="text/html")


@bp.post("/unsubscribe/<token>")
def unsubscribe(token: str):
    deps, parts = _deps()
    found = read_token(_link_keys(deps), token)
    if found is None:
        return Response(_PAGE.format(body=_BAD), status=404, mimetype="text/html")
    m, c = found
    now = time.time()
    if parts.profiles.unsubscribe(m, c, now):
        deps.registry.count(m, "unsubscribed")
        cancelled = cancel_pending(parts.ledger, parts.due, deps.redis, deps.keys, m, c, now)
        log.info("merchant=%s customer=%s unsubscribed by link; %d pending reminder(s) cancelled", m, c, cancelled)
    return Response(_PAGE.format(body=_DONE), mimetype="text/html")
