"""The sandbox's stand-in for Salla's embedded pages: Token Introspect and a "dashboard" host.

Salla's side of shared/salla/REFERENCE.md "Embedded pages", answering with its documented
examples (tests/fixtures/salla/introspect.json, read by path as the sandbox reads its samples):

- `POST /exchange-authority/v1/introspect` on the sandbox (so SALLA_INTROSPECT_URL is
  `<sandbox>/exchange-authority/v1/introspect`), header `S-Source: <app id>`, JSON `{"token"}`:
  200 with the token's merchant_id, user_id and exp (ISO 8601, Z) in the example's envelope;
  401 for a token never issued (forged), expired, or issued for another app id.
- `POST /_sandbox/embedded-tokens` `{"merchant_id", "user_id"?, "expires_in"? (seconds, default
  300: Salla's are "about 5 minutes"; 0 or less gives an expired one)}` → `{"token", "exp"}`.
- `dashboard_app(sandbox_app, page_url)`: the merchant's dashboard on ANOTHER origin (serve it on
  its own port). `GET /embedded/app/<app_id>/<slug>?merchant=&theme=&lang=` (as Salla's
  `https://s.salla.sa/embedded/app/{appId}/{slug}`) mints a token for that merchant and frames
  `page_url?token=&theme=&lang=`, as Salla does. `GET /` links one page per installed store.
"""
from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, request

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "salla" / "introspect.json"
_EXAMPLES = json.loads(FIXTURE.read_text(encoding="utf-8"))
INTROSPECT_PATH = "/exchange-authority/v1/introspect"
TOKEN_SECONDS = 300
SLUG = "points-reminders"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmbeddedTokens:
    """Tokens the dashboard handed out: token -> (merchant, user, expiry, app id)."""

    def __init__(self, app_id: int):
        self.app_id = str(app_id)
        self._tokens: dict[str, tuple[int, int, float]] = {}
        self.introspections = 0

    def issue(self, merchant_id: int, user_id: int = 987654, expires_in: float = TOKEN_SECONDS) -> dict:
        token = f"em_tok_{secrets.token_urlsafe(24)}"
        expires = time.time() + expires_in
        self._tokens[token] = (merchant_id, user_id, expires)
        return {"token": token, "exp": _iso(expires)}

    def answer(self, token, source: str) -> tuple[int, dict]:
        self.introspections += 1
        found = self._tokens.get(token) if isinstance(token, str) else None
        if found is None or source != self.app_id or found[2] <= time.time():
            return 401, _EXAMPLES["401"]
        merchant_id, user_id, expires = found
        body = json.loads(json.dumps(_EXAMPLES["200"]))
        body["data"].update(merchant_id=merchant_id, user_id=user_id, exp=_iso(expires))
        return 200, body


def register(app: Flask, app_id: int) -> EmbeddedTokens:
    """Add the introspect and token routes to the sandbox app."""
    tokens = EmbeddedTokens(app_id)
    app.extensions["salla_embedded_tokens"] = tokens

    @app.post(INTROSPECT_PATH)
    def introspect() -> tuple[Response, int]:
        body = request.get_json(silent=True)
        status, answer = tokens.answer(body.get("token") if isinstance(body, dict) else None,
                                       request.headers.get("S-Source", ""))
        return jsonify(answer), status

    @app.post("/_sandbox/embedded-tokens")
    def issue_token() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get("merchant_id"), int) or data["merchant_id"] <= 0:
            return jsonify({"error": "send {\"merchant_id\": <positive integer>, \"expires_in\"?: seconds}"}), 400
        expires_in = data.get("expires_in", TOKEN_SECONDS)
        if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool):
            return jsonify({"error": "expires_in must be a number of seconds"}), 400
        return jsonify(tokens.issue(data["merchant_id"], int(data.get("user_id") or 987654), expires_in)), 200

    return tokens


_HOST_PAGE = """<!doctype html>
<html lang="{lang}" dir="{dir}"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Salla dashboard (sandbox)</title>
<style>body{{margin:0;font:14px system-ui,sans-serif;background:{bg};color:{fg}}}
header{{padding:12px 20px;background:#004956;color:#fff}} iframe{{border:0;width:100%;height:1500px;display:block}}</style>
</head><body><header>Salla · {merchant}</header>
<iframe id="app" title="app" src="{src}"></iframe></body></html>"""


def dashboard_app(sandbox_app: Flask, page_url: str) -> Flask:
    """The merchant's dashboard stand-in (see the module docstring). Serve it on its own port:
    another origin than the app's page, as Salla's dashboard is."""
    tokens: EmbeddedTokens = sandbox_app.extensions["salla_embedded_tokens"]
    app = Flask(__name__)
    app.config["APP_PAGE_URL"] = page_url  # read per request: a test may start the app after this host
    app.config["APP_ID"] = tokens.app_id

    @app.get("/embedded/app/<app_id>/<slug>")
    def host(app_id: str, slug: str) -> Response:
        merchant = request.args.get("merchant", "")
        if app_id != tokens.app_id or not merchant.isdigit():
            return Response("unknown app, or no ?merchant=", status=404, mimetype="text/plain")
        lang = request.args.get("lang", "ar") if request.args.get("lang") in ("ar", "en") else "ar"
        theme = request.args.get("theme") if request.args.get("theme") in ("light", "dark") else "light"
        token = request.args.get("token") or tokens.issue(int(merchant))["token"]  # ?token= frames a given one
        src = f"{app.config['APP_PAGE_URL']}?{urlencode({'token': token, 'theme': theme, 'lang': lang})}"
        html = _HOST_PAGE.format(lang=lang, dir="rtl" if lang == "ar" else "ltr", merchant=escape(merchant),
                                 src=escape(src), bg="#15191b" if theme == "dark" else "#f5f7f8",
                                 fg="#e6eced" if theme == "dark" else "#1f2d33")
        return Response(html, mimetype="text/html")

    @app.get("/")
    def index() -> Response:
        state = sandbox_app.extensions["salla_sandbox"]
        links = "".join(
            f'<li><a href="/embedded/app/{tokens.app_id}/{SLUG}?merchant={view["merchant_id"]}">'
            f'{view["merchant_id"]}</a></li>' for view in state.views())
        return Response(f"<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><h1>Salla dashboard "
                        f"(sandbox)</h1><ul>{links}</ul>", mimetype="text/html")

    return app


def page_address(dashboard_url: str, app_id: str, merchant_id: int, lang: str = "ar", theme: str = "light") -> str:
    return f"{dashboard_url}/embedded/app/{app_id}/{SLUG}?{urlencode({'merchant': merchant_id, 'lang': lang, 'theme': theme})}"


def dashboard_page_url(host: Flask, host_url: str, web_url: str, merchant_id: int) -> str:
    """Point the dashboard `host` (served at `host_url`) at the app's page on `web_url`; the
    address of one store's page in it."""
    host.config["APP_PAGE_URL"] = f"{web_url}/salla/embedded"
    return page_address(host_url, host.config["APP_ID"], merchant_id)
