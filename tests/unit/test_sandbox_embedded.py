"""Issue 17 §2: the devkit sandbox serves Token Introspect as Salla documents it (valid tokens per
merchant, 401 for forged or expired ones) and a dashboard host that frames the app's page."""
import json
import re

from devkit.sandbox import create_app as create_sandbox
from devkit.sandbox_embedded import INTROSPECT_PATH, dashboard_app, page_address
from tests.conftest import FIXTURES

EXAMPLES = json.loads((FIXTURES / "introspect.json").read_text(encoding="utf-8"))
APP = "513499943"


def test_introspect_answers_as_documented():
    """Issue 17 §2: a token the dashboard issued → the documented 200 with its merchant; forged,
    expired or another app's S-Source → the 401."""
    sandbox = create_sandbox(token=None, app_id=int(APP)).test_client()
    issued = sandbox.post("/_sandbox/embedded-tokens", json={"merchant_id": 77}).get_json()
    answer = sandbox.post(INTROSPECT_PATH, json={"token": issued["token"]}, headers={"S-Source": APP})
    body = answer.get_json()
    assert answer.status_code == 200 and set(body) == set(EXAMPLES["200"]) and body["success"] is True
    assert set(body["data"]) == set(EXAMPLES["200"]["data"]) and body["data"]["merchant_id"] == 77
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["data"]["exp"])
    expired = sandbox.post("/_sandbox/embedded-tokens", json={"merchant_id": 77, "expires_in": -1}).get_json()
    for token, source in ((expired["token"], APP), ("em_tok_forged", APP), (issued["token"], "999")):
        refused = sandbox.post(INTROSPECT_PATH, json={"token": token}, headers={"S-Source": source})
        assert refused.status_code == 401 and refused.get_json() == EXAMPLES["401"]
    assert sandbox.post("/_sandbox/embedded-tokens", json={"merchant_id": "77"}).status_code == 400


def test_the_dashboard_frames_the_page_with_token_theme_and_lang():
    """Issue 17 §2: a "dashboard" host page that frames the app page with ?token=&theme=&lang=, as Salla does."""
    sandbox = create_sandbox(token=None, app_id=int(APP))
    host = dashboard_app(sandbox, "http://127.0.0.1:8000/salla/embedded").test_client()
    html = host.get(page_address("", APP, 77, "en", "dark")).get_data(as_text=True)
    src = re.search(r'<iframe id="app" title="app" src="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/salla/embedded\?token=em_tok_[\w-]+&theme=dark&lang=en", src)
    token = re.search(r"token=([\w-]+)", src).group(1)
    answer = sandbox.test_client().post(INTROSPECT_PATH, json={"token": token}, headers={"S-Source": APP})
    assert answer.get_json()["data"]["merchant_id"] == 77
    assert host.get(page_address("", "1", 77)).status_code == 404
