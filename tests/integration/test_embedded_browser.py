"""Issue 17, "Must show": the embedded page in a real browser (Playwright driving the system
Chromium), framed by the sandbox's dashboard host on another origin, as Salla frames it.

Real Redis, the Flask app and the Salla sandbox (introspect + dashboard) over real HTTP, each on
its own port of 127.0.0.1, so the dashboard is another origin than the page. Screenshots of the
page (ar/light, en/dark) are written into docs/ by this run (the README shows them).
Chromium is /usr/bin/chromium (Debian's package, as CI installs it); no `playwright install`.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import requests
from flask import Flask

from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from devkit.sandbox_embedded import INTROSPECT_PATH, dashboard_app, dashboard_page_url, page_address
from service.state import store_figures
from service.state.alarms import Alarms
from service.web.app import create_app
from service.state.keys import Keys
from tests.conftest import make_settings
from service.state.ledger import Ledger

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
APP_ID = "513499943"
A, B = 1305146709, 4242
DOCS = Path(__file__).resolve().parents[2] / "docs"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extras bring it
    sync_playwright = None


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None:
        pytest.skip("no system Chromium (apt-get install chromium): the embedded page's browser tests need it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def seed(store, merchant_id: int, sent: int, saved: int, dead: bool = False, weeks_back: int = 0):
    """`sent` reminders now (and as many in each of `weeks_back` earlier weeks, for the chart)."""
    keys, now = Keys("lpr:"), time.time()
    for week in range(weeks_back + 1):
        for n in range(sent):
            store_figures.record_sent(store, keys, merchant_id, 1000 + n, [((30, 7, 1)[n % 3], 100 + 10 * n)],
                                      f"{week:04x}{n:028x}", now - 86400 * 7 * week)
        store_figures.record_saved(store, keys, merchant_id, (7, 1)[week % 2], saved + 13 * week, now - 86400 * 7 * week)
    for channel, counts in (("whatsapp", {"sent": sent, "delivered": sent - 1, "failed:undeliverable": 1}),
                            ("sms", {"sent": 4, "delivered": 2, "failed:refused": 2})):
        for status, value in counts.items():
            store.hincrby(keys.store(merchant_id).statuses, f"{channel}:{status}", value)
    if dead:  # and three reminders sent through the ledger, the latest ones the page lists
        sent_ledger = Ledger(store, "lpr:")
        for n, (mobile, email) in enumerate((("+966501234567", None), (None, "sara@example.com"),
                                             ("+966559876543", None))):
            rid = f"{n + 1:x}" * 32
            sent_ledger.create({"reminder_id": rid[:32], "merchant_id": merchant_id, "customer_id": 500 + n,
                                "stage_days": (30, 7, 1)[n], "points_expiring": 150 * (n + 1),
                                "customer": {"mobile": mobile, "email": email}, "lots": [{"key": f"s{n}"}]}, 86400, now)
            store.hset(keys.store(merchant_id).reminder(rid[:32]), "ch:whatsapp" if mobile else "ch:email", "sent")
            sent_ledger.mark_sent(merchant_id, 500 + n, rid[:32], now)
        Alarms(store, "lpr:").raise_(f"sms_account_{merchant_id}", f"merchant {merchant_id}: Unifonic refuses (credit)")
        ledger = Ledger(store, "lpr:")
        reminder = {"reminder_id": "d" * 32, "merchant_id": merchant_id, "customer_id": 77, "stage_days": 7,
                    "points_expiring": 250, "customer": {"mobile": "+966512345678"}, "lots": [{"key": "l1"}]}
        ledger.create(reminder, 86400, now)
        ledger.finish(merchant_id, 77, reminder["reminder_id"], "dead", now, error="refused")


@pytest.fixture
def dashboard(store, redis_url):
    """(dashboard URL, app URL, sandbox URL): the sandbox, its dashboard and the app, each on its own port."""
    sandbox_app = create_sandbox(token=None, app_id=int(APP_ID))
    with serve_in_thread(sandbox_app) as sandbox, \
            serve_in_thread(host_app := dashboard_app(sandbox_app, "")) as host:
        settings = make_settings(REDIS_URL=redis_url, REMINDER_CHANNELS="whatsapp,sms,email", POINT_VALUE_SAR="0.05",
                                 WHATSAPP_PHONE_NUMBER_ID="106540352242922", WHATSAPP_ACCESS_TOKEN="EAAG" + "x" * 40,
                                 SMS_API_KEY="sandbox-sms-key-0123", SMS_SENDER="Store", SALLA_APP_ID=APP_ID, SALLA_EMBEDDED_SDK_URL="none",
                                 SALLA_INTROSPECT_URL=sandbox.url + INTROSPECT_PATH, ALLOW_PRIVATE_URLS="1",
                                 EMBEDDED_DEV_ORIGIN=host.url)
        with serve_in_thread(create_app(settings, redis_client=store, queue=object())) as web:
            dashboard_page_url(host_app, host.url, web.url, A)
            seed(store, A, sent=12, saved=340, dead=True, weeks_back=6)
            seed(store, B, sent=5, saved=99)
            shown = {m: str(store_figures.read(store, Keys("lpr:"), m, time.time())["month"]["sent"]) for m in (A, B)}
            assert shown[A] != shown[B]
            yield host.url, web.url, sandbox.url, shown


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="load")
    frame = page.frame_locator("#app")
    return context, page, frame, errors


@pytest.mark.parametrize("lang, theme", [("ar", "light"), ("en", "dark"), ("en", "light"), ("ar", "dark")])
def test_the_framed_page_renders_in_each_language_and_theme(browser, dashboard, lang, theme):
    """Issue 17 Must show: framed by the sandbox's dashboard on another origin, the page renders in
    Arabic and English, light and dark; dir="rtl" in Arabic; no console errors; the chart and the
    holdout panel are there. The ar/light and en/dark screenshots go into docs/."""
    host, web, _, shown = dashboard
    context, page, frame, errors = open_page(browser, page_address(host, APP_ID, A, lang, theme))
    frame.locator("#this-month").wait_for()
    html = frame.locator("html")
    assert html.get_attribute("dir") == ("rtl" if lang == "ar" else "ltr")
    assert html.get_attribute("lang") == lang and html.get_attribute("data-theme") == theme
    assert frame.locator("#chart svg.chart rect").count() > 0
    assert frame.locator("#holdout[data-status=off]").count() == 1
    assert frame.locator("#reminders-sent").inner_text().strip() == shown[A]
    assert frame.locator("#dead-letters button").count() == 1
    assert frame.locator("#sar-saved").count() == 1  # 340 points at 0.05 SAR
    assert frame.locator("#latest .contact").all_inner_texts() == ["+9665••••••43", "s•••@example.com", "+9665••••••67"]
    assert frame.locator("#channels [data-channel=sms] .needs").count() == 1  # the SMS credit alarm
    direction = frame.locator("body").evaluate("el => getComputedStyle(el).direction")
    assert direction == ("rtl" if lang == "ar" else "ltr")
    if (lang, theme) in (("ar", "light"), ("en", "dark")):
        DOCS.mkdir(exist_ok=True)
        page.locator("#app").screenshot(path=str(DOCS / f"embedded-{lang}-{theme}.png"))
    assert errors == []
    context.close()


def test_merchant_a_session_cannot_read_merchant_b_figures(browser, dashboard):
    """Issue 17 Must show: merchant A's session cannot read merchant B's figures."""
    host, web, _, shown = dashboard
    context, page, frame, errors = open_page(browser, page_address(host, APP_ID, A, "en"))
    assert frame.locator("#reminders-sent").inner_text().strip() == shown[A]
    # The same browser (A's cookie) asks for B's figures every way a request could name a store.
    for query in ("merchant_id=4242", "merchant=4242", "store=4242"):
        answer = context.request.get(f"{web}/salla/embedded?lang=en&{query}")
        assert answer.status == 200
        assert f'id="reminders-sent"><span class="ltr">{shown[A]}<' in answer.text()
    context.close()
    context, page, frame, errors = open_page(browser, page_address(host, APP_ID, B, "en"))
    assert frame.locator("#reminders-sent").inner_text().strip() == shown[B] == "5"
    assert frame.locator("#dead-letters button").count() == 0
    context.close()


@pytest.mark.parametrize("kind", ["expired", "forged"])
def test_an_expired_or_forged_token_gets_the_open_from_salla_state(browser, dashboard, kind):
    """Issue 17 Must show: an expired or forged token gets the "open it from Salla" state, not data."""
    host, web, sandbox, shown = dashboard
    token = requests.post(f"{sandbox}/_sandbox/embedded-tokens", json={"merchant_id": A, "expires_in": -1},
                          timeout=5).json()["token"] if kind == "expired" else "em_tok_forged-by-someone"
    context, page, frame, errors = open_page(browser, page_address(host, APP_ID, A, "en") + f"&token={token}")
    frame.locator("#state-open_from_salla").wait_for()
    assert "Open this page from your Salla dashboard" in frame.locator("body").inner_text()
    assert frame.locator("#this-month").count() == 0 and frame.locator("#reminders-sent").count() == 0
    context.close()


def test_the_page_refuses_to_be_framed_by_any_other_origin(browser, dashboard):
    """Issue 17 Must show: the page refuses to be framed by any other origin (CSP frame-ancestors)."""
    host, web, sandbox, shown = dashboard
    token = requests.post(f"{sandbox}/_sandbox/embedded-tokens", json={"merchant_id": A}, timeout=5).json()["token"]
    other = Flask("elsewhere")
    other.add_url_rule("/", "frame", lambda: f'<!doctype html><link rel="icon" href="data:,"><iframe id="app" '
                                             f'src="{web}/salla/embedded?token={token}&lang=en"></iframe>')
    with serve_in_thread(other) as evil:
        context = browser.new_context()
        page = context.new_page()
        blocked = []
        page.on("console", lambda msg: blocked.append(msg.text))
        page.goto(evil.url, wait_until="load")
        page.wait_for_timeout(500)
        frame = page.frame_locator("#app")
        assert frame.locator("#this-month").count() == 0
        assert any("frame-ancestors" in text for text in blocked), blocked
        context.close()


def test_the_replay_button_works_inside_the_frame(browser, dashboard):
    """Issue 17 §2: dead letters with a replay button (the session cookie and CSRF token inside
    the third-party frame, as in Salla's dashboard)."""
    host, web, _, shown = dashboard
    context, page, frame, errors = open_page(browser, page_address(host, APP_ID, A, "en"))
    frame.locator("#dead-letters button").click()
    frame.locator("#notice").wait_for()
    assert frame.locator("#notice").inner_text() == "The message is queued again."
    assert frame.locator("#dead-letters button").count() == 0
    assert errors == []
    context.close()
