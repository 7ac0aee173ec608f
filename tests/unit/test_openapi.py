"""docs/openapi.yaml against the real Flask app (issue 15 item 6): every route is in the
document, and schemathesis fuzzes every operation in it: no 5xx, every answer's status, content
type and body as documented. fakeredis (the same Lua scripts and encoding as a real server);
no network: channels that would send need settings this app does not have."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
from pathlib import Path

import fakeredis
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from service.web.app import create_app
from service.state.channel_settings import ChannelSettings
from service.domain.events import Customer
from service.domain.signatures import sign
from service.domain.unsubscribe import callback_token, make_token
from tests.conftest import TOKEN_KEY, WEBHOOK_SECRET, make_settings
from service.state.profiles import Profiles

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
RAW = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
ADMIN_TOKEN = "ops-admin-token-for-the-openapi-fuzz-0123"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_dict(RAW)


class RecordingQueue:
    """The broker: takes every message (a backfill's pump, a fallback's delivery)."""

    def __init__(self):
        self.sent = []

    def enqueue(self, message, task=None):
        self.sent.append((task, message))

    def publish(self, task, args):
        self.sent.append((task, args))

    def send(self, task, args):
        self.sent.append((task, args))


M, C = 1305146709, 42  # the document's example ids: a store and a customer that exist
META_SECRET = "meta-app-secret"


def make_app():
    # Failed admin logins are not rate-limited here: schemathesis sends some without the token
    # on purpose, and a 429 for the rest would hide the handlers from the fuzz.
    app = create_app(make_settings(ADMIN_TOKEN=ADMIN_TOKEN, ADMIN_AUTH_FAILURES_PER_MINUTE="1000000",
                                   WHATSAPP_VERIFY_TOKEN="verify-me", WHATSAPP_APP_SECRET=META_SECRET),
                     redis_client=fakeredis.FakeRedis(decode_responses=True), queue=RecordingQueue())
    deps = app.extensions["reminder_service"]
    Profiles(deps.redis, deps.settings.redis_key_prefix).save(M, Customer(C, "سارة", "+966500000001", "s@example.com",
                                                                          True))
    ChannelSettings(deps.redis, deps.settings.redis_key_prefix, deps.settings).update(
        M, {"whatsapp": {"app_secret": META_SECRET + "-own", "verify_token": "verify-me-own-0123456789"}})
    return app


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_the_document_is_valid_openapi_3():
    from openapi_spec_validator import validate

    validate(RAW)


def test_every_route_of_the_app_is_in_the_document():
    """Issue 15 item 6: the document cannot drift from the app: every route (admin, callbacks,
    unsubscribe links, Salla's webhook, health) and method is described."""
    app = make_app()
    routes = {(_openapi_path(rule.rule), method.lower()) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in RAW["paths"].items() for method in item
                  if method in ("get", "put", "post", "delete", "patch")}
    assert routes - documented == set(), "routes missing from docs/openapi.yaml"
    assert {path for path, _ in routes if path.startswith("/admin/")}  # the admin API is in it


@pytest.fixture
def app():
    # A fresh store per operation: what one operation's fuzz sets up (a channel's URL) never
    # reaches another's (a send-test would try to send there).
    return make_app()


@schema.parametrize()
@hsettings(max_examples=40, derandomize=True, deadline=None,
           suppress_health_check=list(HealthCheck))
def test_the_app_answers_as_documented(case, app):
    """Issue 15 item 6: schemathesis over every operation of docs/openapi.yaml, against the
    Flask app: 0 server errors, 0 answers outside the document (status, content type, body)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    params = case.path_parameters or {}
    genuine = next(_turns) % 2 == 0
    # Every other case, a genuine URL secret or signature, so that the fuzz gets past the check
    # to the handler behind it; the others try their luck.
    if genuine and "token" in params:
        if case.path.startswith("/unsubscribe/"):
            params["token"] = make_token((TOKEN_KEY,), M, C)
        elif "merchant_id" in params:
            merchant = params["merchant_id"] if isinstance(params["merchant_id"], int) else M
            params["token"] = callback_token((TOKEN_KEY,), merchant)
        else:  # the shared SMS account's report URL
            params["token"] = callback_token((TOKEN_KEY,), 0, "sms-dlr-shared")
    extra = {}
    signed_by = {"/webhooks/salla": ("X-Salla-Signature", lambda raw: sign(raw, WEBHOOK_SECRET)),
                 "/channels/whatsapp/status": ("X-Hub-Signature-256", lambda raw: _meta(raw, META_SECRET)),
                 "/channels/whatsapp/{merchant_id}/status": ("X-Hub-Signature-256",
                                                            lambda raw: _meta(raw, META_SECRET + "-own"))}
    if genuine and case.method == "POST" and case.path in signed_by and _is_json(case):
        raw = json.dumps(case.body, ensure_ascii=False).encode()
        header, signature = signed_by[case.path]
        headers[header] = signature(raw)
        extra["data"] = raw
    case.call_and_validate(app=app, headers=headers, checks=CHECKS, **extra)


_turns = itertools.count()


def _meta(raw: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def _is_json(case) -> bool:
    try:
        json.dumps(case.body)
    except (TypeError, ValueError):
        return False
    return (case.media_type or "").endswith("json")


@pytest.mark.parametrize("body", [{"entry": None}, {"entry": 5}, {"entry": [{"changes": True}]},
                                  {"entry": [{"changes": [{"value": {"statuses": False}}]}]}, [1], "x", None])
def test_a_signed_whatsapp_body_of_another_shape_is_a_200_not_a_500(body):
    """Issue 15 item 6 (the schemathesis run found it): a signed WhatsApp status body whose
    `entry`, `changes` or `statuses` was not a list (null, true, a number) was a 500."""
    raw = json.dumps(body).encode()
    answer = make_app().test_client().post("/channels/whatsapp/status", data=raw, headers={
        "X-Hub-Signature-256": _meta(raw, META_SECRET), "Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.get_json() == {"applied": 0, "unknown": 0}
