"""The access log (WEB_ACCESS_LOG=1) never shows a secret of a URL or a header (issue 15 item 5)."""
from __future__ import annotations

import importlib
import logging
import re
from datetime import timedelta
from types import SimpleNamespace

import fakeredis
import pytest

from service.web.access_log import MASK, scrub_atoms, scrub_path, scrub_query, scrub_url
from service.web.app import create_app
from service.domain.unsubscribe import callback_token, make_token
from tests.conftest import TOKEN_KEY, make_settings
from tests.unit.test_metrics_and_logs import _loggers_restored

SECRET = "c2VjcmV0LXRva2VuLXZhbHVl"


@pytest.fixture(scope="module")
def app():
    return create_app(make_settings(), redis_client=fakeredis.FakeRedis(decode_responses=True), queue=None)


def token_routes(app) -> list:
    return [rule for rule in app.url_map.iter_rules() if "token" in rule.arguments]


def test_every_route_that_carries_a_token_has_it_masked(app):
    """Issue 15 item 5: with WEB_ACCESS_LOG=1 the access log showed SMS delivery-report and
    unsubscribe tokens. Every route of the app with a `token` in its path is scrubbed (a route
    added later without a line in SECRET_ROUTES fails here), and nothing else of the path is."""
    rules = token_routes(app)
    assert {rule.rule for rule in rules} >= {"/unsubscribe/<token>", "/channels/sms/<int:merchant_id>/dlr/<token>"}
    for rule in rules:
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<int:{name}>", "1305146709").replace(f"<{name}>", SECRET if name == "token" else "x")
        scrubbed = scrub_path(path)
        assert SECRET not in scrubbed, rule.rule
        assert scrubbed == path.replace(SECRET, MASK)
        assert SECRET not in scrub_path(path.replace("/", "//")), "merged slashes route the same"
        assert SECRET not in scrub_path(path + "/trailing")


def test_real_tokens_in_real_urls_are_masked():
    unsubscribe = f"/unsubscribe/{make_token((TOKEN_KEY,), 1305146709, 42)}"
    dlr = f"/channels/sms/1305146709/dlr/{callback_token((TOKEN_KEY,), 1305146709)}"
    assert scrub_path(unsubscribe) == f"/unsubscribe/{MASK}"
    assert scrub_path(dlr) == f"/channels/sms/1305146709/dlr/{MASK}"
    assert scrub_path(f"/channels/sms/dlr/{SECRET}") == f"/channels/sms/dlr/{MASK}"  # the shared account's
    # Paths that carry no secret are shown as they are.
    for path in ("/webhooks/salla", "/admin/stores/7/reminders/abc", "/channels/whatsapp/7/status", "/readyz", "/"):
        assert scrub_path(path) == path


def test_query_values_and_urls():
    assert scrub_query("hub.mode=subscribe&hub.verify_token=s3cret;x") == \
        f"hub.mode={MASK}&hub.verify_token={MASK};{MASK}"
    assert scrub_query("") == ""
    assert scrub_url(f"https://shop.example/unsubscribe/{SECRET}?a=b#frag") == \
        f"https://shop.example/unsubscribe/{MASK}?a={MASK}#{MASK}"
    assert scrub_url("-") == "-"
    assert scrub_url("http://[::1") == MASK


def test_every_field_gunicorn_can_log_is_scrubbed():
    atoms = {"U": f"/unsubscribe/{SECRET}", "q": f"t={SECRET}", "r": f"POST /unsubscribe/{SECRET}?t={SECRET} HTTP/1.1",
             "f": f"https://x.example/unsubscribe/{SECRET}", "{authorization}i": f"Bearer {SECRET}",
             "{x-salla-signature}i": SECRET, "{http_authorization}e": SECRET, "{raw_uri}e": f"/unsubscribe/{SECRET}",
             "{query_string}e": f"t={SECRET}", "{location}o": f"/unsubscribe/{SECRET}", "{cookie}i": SECRET,
             "s": "200", "B": 12, "m": "POST", "{user-agent}i": "curl/8"}
    clean = scrub_atoms(atoms)
    assert not [key for key, value in clean.items() if SECRET in str(value)]
    assert clean["r"] == f"POST /unsubscribe/{MASK}?t={MASK} HTTP/1.1"
    assert clean["s"] == "200" and clean["B"] == 12 and clean["{user-agent}i"] == "curl/8"


def test_gunicorns_access_line_has_no_token(monkeypatch):
    """Issue 15 item 5, end to end: the line gunicorn writes with our config and WEB_ACCESS_LOG=1."""
    from gunicorn.config import Config

    from service.web import gunicorn_conf

    monkeypatch.setenv("WEB_ACCESS_LOG", "1")
    conf = importlib.reload(gunicorn_conf)
    cfg = Config()
    for name in ("accesslog", "logconfig_dict", "logger_class", "access_log_format"):
        cfg.set(name, getattr(conf, name))
    token = make_token((TOKEN_KEY,), 1305146709, 42)
    dlr_token = callback_token((TOKEN_KEY,), 1305146709)
    lines = []
    try:
        with _loggers_restored():
            logger = cfg.logger_class(cfg)
            handler = logging.Handler()
            handler.emit = lambda record: lines.append(record.getMessage())
            logger.access_log.addHandler(handler)
            for path, query in ((f"/unsubscribe/{token}", ""), (f"/channels/sms/1305146709/dlr/{dlr_token}", "a=1"),
                                ("/channels/whatsapp/status", f"hub.verify_token={token}")):
                environ = {"REQUEST_METHOD": "POST", "RAW_URI": f"{path}?{query}", "SERVER_PROTOCOL": "HTTP/1.1",
                           "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "10.0.0.1"}
                resp = SimpleNamespace(status="200 OK", sent=12, headers=[])
                logger.access(resp, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=3))
    finally:
        monkeypatch.delenv("WEB_ACCESS_LOG")
        importlib.reload(gunicorn_conf)
    assert len(lines) == 3
    assert not [line for line in lines if token in line or dlr_token in line]
    assert re.search(r'"POST /unsubscribe/\[redacted\]" 200 12 3ms', lines[0]), lines[0]
