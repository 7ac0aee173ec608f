"""Issue 17, section 2: the app's page inside the merchant's Salla dashboard (/salla/embedded).

Salla's Token Introspect is faked with `responses` from its documented answers
(tests/fixtures/salla/introspect.json); Redis is fakeredis.
"""
import json
import re

import fakeredis
import pytest
import responses

from service.web.app import create_app
from service.web.embedded_session import COOKIE
from tests.conftest import FIXTURES, make_settings
from service.state.ledger import Ledger

INTROSPECT = "https://api.salla.dev/exchange-authority/v1/introspect"
EXAMPLES = json.loads((FIXTURES / "introspect.json").read_text(encoding="utf-8"))
APP_ID = "513499943"
D1, D2 = "a1" * 16, "b2" * 16  # reminder ids, as service/domain/reminders.py makes them


def app_for(**env):
    env = {"SALLA_APP_ID": APP_ID, "SALLA_EMBEDDED_SDK_URL": "none", **env}
    store = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return create_app(make_settings(**env), redis_client=store, queue=object())


def salla_says(merchant_id: int | None, exp: str = "2999-01-19T12:00:00Z"):
    """Register Salla's answer: the documented 200 for `merchant_id`, or its 401."""
    if merchant_id is None:
        responses.post(INTROSPECT, json=EXAMPLES["401"], status=401)
        return
    body = json.loads(json.dumps(EXAMPLES["200"]))
    body["data"].update(merchant_id=merchant_id, exp=exp)
    responses.post(INTROSPECT, json=body, status=200)


def seed_month(app, merchant_id: int, sent: int):
    deps = app.extensions["reminder_service"]
    from service.state import store_figures
    import time
    for n in range(sent):
        store_figures.record_sent(deps.redis, deps.keys, merchant_id, 1000 + n, [(7, 100)], f"r{merchant_id}-{n}",
                                  time.time())


@responses.activate
def test_token_is_introspected_as_documented_and_a_session_cookie_set():
    """Issue 17 §2: the backend verifies the token with Token Introspect (S-Source: SALLA_APP_ID,
    JSON {"token"}) and keeps its own short session cookie: Secure; SameSite=None; HttpOnly."""
    salla_says(1305146709)
    answer = app_for().test_client().get("/salla/embedded?token=em_tok_abc&theme=light&lang=ar")
    assert answer.status_code == 200
    [call] = responses.calls
    assert call.request.headers["S-Source"] == APP_ID
    assert json.loads(call.request.body) == {"token": "em_tok_abc"}
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    for part in ("Secure", "HttpOnly", "SameSite=None", "Path=/"):
        assert part in cookie
    assert "em_tok_abc" not in cookie


@responses.activate
def test_the_page_is_arabic_rtl_by_default_and_english_on_request():
    """Issue 17 §2: Arabic (right to left) by default, English, light and dark as Salla passes them."""
    salla_says(7)
    salla_says(7)
    client = app_for().test_client()
    ar = client.get("/salla/embedded?token=t1").get_data(as_text=True)
    assert '<html lang="ar" dir="rtl" data-theme="light">' in ar
    en = client.get("/salla/embedded?token=t2&lang=en&theme=dark").get_data(as_text=True)
    assert '<html lang="en" dir="ltr" data-theme="dark">' in en
    assert "Reminders sent" in en


@responses.activate
@pytest.mark.parametrize("body, status", [(EXAMPLES["401"], 401), ({"status": 200, "success": True,
                                                                      "data": {"merchant_id": 7, "exp": "2001-01-01T00:00:00Z"}}, 200)])
def test_a_refused_or_expired_token_gets_the_open_from_salla_state_and_no_data(body, status):
    """Issue 17 §2: an expired or forged token gets the "open it from Salla" state, not data."""
    responses.post(INTROSPECT, json=body, status=status)
    app = app_for()
    seed_month(app, 7, 3)
    answer = app.test_client().get("/salla/embedded?token=forged&lang=en")
    assert answer.status_code == 401
    text = answer.get_data(as_text=True)
    assert "Open this page from your Salla dashboard" in text and 'id="reminders-sent"' not in text
    assert "Set-Cookie" not in answer.headers


def test_no_token_and_no_session_gets_no_data():
    answer = app_for().test_client().get("/salla/embedded?merchant_id=7")
    assert answer.status_code == 401 and 'data-state="open_from_salla"' in answer.get_data(as_text=True)


@responses.activate
def test_salla_unreachable_is_a_503_page_not_a_500():
    responses.post(INTROSPECT, body="<html>502</html>", status=502)
    assert app_for().test_client().get("/salla/embedded?token=t").status_code == 503


@responses.activate
def test_a_session_reads_its_own_merchant_only_never_an_id_from_the_request():
    """Issue 17 §2: the session is scoped to that merchant alone; no merchant id is taken from the request."""
    app = app_for()
    seed_month(app, 7, 3)
    seed_month(app, 8, 5)
    salla_says(7)
    client = app.test_client()
    first = client.get("/salla/embedded?token=t&lang=en").get_data(as_text=True)
    assert re.search(r'id="reminders-sent"><span class="ltr">3<', first)
    again = client.get("/salla/embedded?lang=en&merchant_id=8&merchant=8").get_data(as_text=True)
    assert re.search(r'id="reminders-sent"><span class="ltr">3<', again)  # the cookie's merchant, 7
    client.set_cookie(COOKIE, "eyJtIjo4LCJzIjoieCJ9.forged.sig", domain="localhost")
    assert client.get("/salla/embedded").status_code == 401


@responses.activate
def test_frame_ancestors_allow_salla_only_and_the_dev_origin_only_with_private_urls():
    """Issue 17 §2: Content-Security-Policy frame-ancestors allows Salla's dashboard and nothing else."""
    csp = app_for().test_client().get("/salla/embedded").headers["Content-Security-Policy"]
    assert "frame-ancestors https://s.salla.sa https://*.salla.sa" in csp and "127.0.0.1" not in csp
    assert "default-src 'none'" in csp
    csp = app_for(EMBEDDED_DEV_ORIGIN="http://127.0.0.1:8766").test_client().get("/salla/embedded") \
        .headers["Content-Security-Policy"]
    assert "127.0.0.1:8766" not in csp  # ALLOW_PRIVATE_URLS is off
    csp = app_for(EMBEDDED_DEV_ORIGIN="http://127.0.0.1:8766", ALLOW_PRIVATE_URLS="1").test_client() \
        .get("/salla/embedded").headers["Content-Security-Policy"]
    assert csp.endswith("frame-ancestors https://s.salla.sa https://*.salla.sa http://127.0.0.1:8766")


def _dead_letter(app, merchant_id: int, rid: str):
    deps = app.extensions["reminder_service"]
    ledger = Ledger(deps.redis, deps.settings.redis_key_prefix)
    reminder = {"reminder_id": rid, "merchant_id": merchant_id, "customer_id": 5, "stage_days": 7,
                "points_expiring": 40, "customer": {"mobile": "+966500000123"}, "lots": [{"key": "lot-1"}]}
    ledger.create(reminder, 86400, 1.0)
    ledger.finish(merchant_id, 5, rid, "dead", 2.0, error="refused")
    return ledger


@responses.activate
def test_replaying_a_dead_letter_needs_the_csrf_token_and_touches_the_sessions_store_only():
    """Issue 17 §2: dead letters with a replay button; a write needs a CSRF token."""
    app = app_for()
    ledger = _dead_letter(app, 7, D1)
    _dead_letter(app, 8, D2)
    salla_says(7)
    client = app.test_client()
    page = client.get("/salla/embedded?token=t&lang=en").get_data(as_text=True)
    assert "+9665••••••23" in page and "+966500000123" not in page
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    assert client.post("/salla/embedded/dead-letters/" + D1 + "/replay?lang=en").status_code == 403
    assert client.post("/salla/embedded/dead-letters/" + D1 + "/replay", data={"csrf": "0" * 64}).status_code == 403
    assert ledger.state(7, D1) == "dead"
    other = client.post("/salla/embedded/dead-letters/" + D2 + "/replay?lang=en", data={"csrf": csrf})
    assert other.status_code == 303 and "notice=not_found" in other.headers["Location"]
    assert ledger.state(8, D2) == "dead"  # merchant 8's dead letter is out of merchant 7's reach
    done = client.post("/salla/embedded/dead-letters/" + D1 + "/replay?lang=en", data={"csrf": csrf})
    assert done.status_code == 303 and "notice=replayed" in done.headers["Location"]
    assert ledger.state(7, D1) == "scheduled"


def test_a_replay_without_a_session_is_refused():
    assert app_for().test_client().post("/salla/embedded/dead-letters/x/replay", data={"csrf": "x"}).status_code == 401


@responses.activate
def test_nothing_is_loaded_from_outside_but_the_sdk_url_setting():
    """Issue 17 §2: the Salla SDK script URL is a setting; nothing else loads from outside."""
    salla_says(7)
    app = app_for(SALLA_EMBEDDED_SDK_URL="https://cdn.example/embedded-sdk.js")
    answer = app.test_client().get("/salla/embedded?token=t")
    html = answer.get_data(as_text=True)
    assert sorted(re.findall(r'(?:src|href)="(https?:[^"]+)"', html)) == ["https://cdn.example/embedded-sdk.js",
                                                                  "https://s.salla.sa/apps/installed/513499943"]
    assert "script-src 'nonce-" in answer.headers["Content-Security-Policy"]
    assert "https://cdn.example" in answer.headers["Content-Security-Policy"]


@responses.activate
def test_redis_down_is_a_503_page_not_a_500():
    """Every refusal is a clear 4xx/5xx page, never a 500."""
    import redis
    salla_says(7)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    app = create_app(make_settings(SALLA_APP_ID=APP_ID, SALLA_EMBEDDED_SDK_URL="none"), redis_client=dead, queue=object())
    answer = app.test_client().get("/salla/embedded?token=t&lang=en")
    assert answer.status_code == 503 and 'data-state="down"' in answer.get_data(as_text=True)


def test_without_an_app_id_the_page_is_off():
    """Salla's introspect needs S-Source: SALLA_APP_ID; without it the page answers 404, as the admin API does when off."""
    app = create_app(make_settings(SALLA_EMBEDDED_SDK_URL="none"), redis_client=fakeredis.FakeRedis(), queue=object())
    assert app.test_client().get("/salla/embedded?token=t").status_code == 404
    assert app.test_client().post("/salla/embedded/dead-letters/x/replay").status_code == 404
