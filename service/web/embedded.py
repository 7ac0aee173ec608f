"""/salla/embedded: the app's own page inside the merchant's Salla dashboard.

Salla frames it with `?token=&theme=light|dark&lang=ar|en` (shared/salla/REFERENCE.md,
"Embedded pages"). The token is checked with Salla's Token Introspect (service/clients/introspect.py),
then our own short session cookie (service/web/embedded_session.py) names the merchant; every read
and the one write (replaying a dead letter, with a CSRF token) use the session's merchant, never
an id from the request. A token that Salla refuses, or no session, gets the "open it from Salla"
state and no data. Without SALLA_APP_ID (Salla's introspect needs it) the page is off: 404.

Every answer carries `Content-Security-Policy: frame-ancestors https://s.salla.sa
https://*.salla.sa` (plus EMBEDDED_DEV_ORIGIN, the devkit's dashboard, only with
ALLOW_PRIVATE_URLS=1), scripts and styles by nonce, and nothing else loaded from outside but
SALLA_EMBEDDED_SDK_URL.
"""
from __future__ import annotations

import logging
import re
import secrets
from urllib.parse import urlencode, urlparse

import redis
import requests
from flask import Blueprint, current_app, g, redirect, request

from service.web import embedded_view
from service.web.admin import dead_letter_action
from service.web.embedded_session import COOKIE, Sessions
from service.clients.introspect import IntrospectUnavailable, TokenRefused, introspect

log = logging.getLogger(__name__)
bp = Blueprint("embedded", __name__, url_prefix="/salla")
SALLA_DASHBOARD = ("https://s.salla.sa", "https://*.salla.sa")
_REMINDER_ID = re.compile(r"[0-9a-f]{32}")  # service/domain/reminders.py reminder_id


def _deps():
    return current_app.extensions["reminder_service"]


def _sessions() -> Sessions:
    return Sessions(_deps().settings.token_encryption_keys[0])


def _choice(value: str | None, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else allowed[0]


def _layout() -> tuple[str, str]:
    """Salla passes lang and theme; anything else falls back to Arabic and light."""
    return _choice(request.args.get("lang"), ("ar", "en")), _choice(request.args.get("theme"), ("light", "dark"))


def frame_ancestors(settings) -> str:
    origins = list(SALLA_DASHBOARD)
    if settings.allow_private_urls and settings.embedded_dev_origin:
        origins.append(settings.embedded_dev_origin)
    return " ".join(origins)


def _sdk_origin(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}" if url else ""


@bp.before_request
def nonce():
    g.embedded_nonce = secrets.token_urlsafe(16)
    if not _deps().settings.salla_app_id:  # no app id, no introspection: the page is off, as the admin API is
        lang, theme = _layout()
        return _state("off", 404, lang, theme)
    return None


@bp.after_request
def headers(response):
    settings = _deps().settings
    sdk = _sdk_origin(settings.salla_embedded_sdk_url)
    n = g.get("embedded_nonce", "")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{n}'{' ' + sdk if sdk else ''}; style-src 'nonce-{n}'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        f"frame-ancestors {frame_ancestors(settings)}")
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL: never pass it on
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _state(name: str, status: int, lang: str, theme: str):
    """A page without data: why, and (Salla's SDK) a fresh token asked from the dashboard."""
    html = embedded_view.render("embedded_state.html", lang=lang, theme=theme, state=name,
                                nonce=g.embedded_nonce, sdk_url=_deps().settings.salla_embedded_sdk_url)
    return html, status, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/embedded")
def page():
    deps = _deps()
    settings = deps.settings
    lang, theme = _layout()
    sessions = _sessions()
    token = request.args.get("token")
    cookie = None
    if token is not None:  # Salla opened the page: its token wins over any older session
        try:
            found = introspect(requests.Session(), settings.salla_introspect_url, settings.salla_app_id, token,
                               settings.salla_http_timeout_seconds, embedded_view.now())
        except TokenRefused as exc:
            log.info("embedded page: token refused (%s)", exc)
            return _state("open_from_salla", 401, lang, theme)
        except IntrospectUnavailable as exc:
            log.warning("embedded page: %s", exc)
            return _state("unavailable", 503, lang, theme)
        session, cookie = sessions.issue(found.merchant_id, found.user_id)
    else:
        session = sessions.read(request.cookies.get(COOKIE))
        if session is None:
            return _state("open_from_salla", 401, lang, theme)
    try:
        data = embedded_view.gather(deps, session.merchant_id, embedded_view.now())
    except redis.RedisError as exc:
        log.error("embedded page of merchant %s: Redis unavailable (%s)", session.merchant_id, type(exc).__name__)
        return _state("down", 503, lang, theme)
    notice = request.args.get("notice")
    html = embedded_view.render(
        "embedded.html", lang=lang, theme=theme, nonce=g.embedded_nonce, sdk_url=settings.salla_embedded_sdk_url,
        csrf=sessions.csrf_token(session), layout=urlencode({"lang": lang, "theme": theme}),
        notice=notice if notice in ("replayed", "not_found") else None,
        settings_url=_settings_url(settings), **embedded_view.page_context(data, lang))
    response = current_app.response_class(html, mimetype="text/html")
    if cookie is not None:
        response.set_cookie(COOKIE, cookie, max_age=sessions.max_age, path="/", secure=True, httponly=True,
                            samesite="None")
    return response


def _settings_url(settings) -> str:
    """The app's page in the merchant's dashboard, where Salla shows its settings form."""
    app = settings.salla_app_id
    return f"https://s.salla.sa/apps/installed/{app}" if app else "https://s.salla.sa/apps"


@bp.post("/embedded/dead-letters/<reminder_id>/replay")
def replay(reminder_id: str):
    lang, theme = _layout()
    sessions = _sessions()
    session = sessions.read(request.cookies.get(COOKIE))
    if session is None:
        return _state("open_from_salla", 401, lang, theme)
    if not sessions.csrf_ok(session, request.form.get("csrf")):
        log.warning("embedded page of merchant %s: a replay without a valid CSRF token", session.merchant_id)
        return _state("forbidden", 403, lang, theme)
    if not _REMINDER_ID.fullmatch(reminder_id):
        return _state("forbidden", 400, lang, theme)
    done = dead_letter_action(_deps(), session.merchant_id, reminder_id, "replay")
    log.info("embedded page: merchant %s replayed dead letter %s: %s", session.merchant_id, reminder_id, done)
    query = urlencode({"lang": lang, "theme": theme, "notice": "replayed" if done else "not_found"})
    return redirect(f"{request.script_root}/salla/embedded?{query}", code=303)
