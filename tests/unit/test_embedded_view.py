"""Issue 17 §2: what the embedded page shows, from plain dicts (service/web/embedded_view.py)."""
import re

import fakeredis
import pytest

from service.web import embedded_view as view
from service.state.holdout import store_report
from tests.conftest import make_settings

STAGE = {"customers": 0, "points": 0, "used_share": None, "lost_share": None}
OFF = store_report(fakeredis.FakeRedis(), "lpr:", 7, make_settings(), 0.0)  # a store with no holdout
WAITING = {**OFF, "percent": 10, "status": "not_enough_data", "customers_needed": 1240}
OK = {"percent": 10, "status": "ok", "customers_needed": None, "effect": 0.152, "ci95": [0.081, 0.223],
      "points_reminded": 50_000, "points_saved": 7600.0, "sar_saved": 380.0,
      "stages": [{"stage_days": 7, "status": "ok", "customers_needed": None,
                  "reminded": {**STAGE, "customers": 900}, "held_out": {**STAGE, "customers": 100},
                  "effect": 0.15, "ci95": [0.08, 0.22]}]}


def test_a_store_without_a_holdout_reports_the_agreed_off_shape():
    """Issue 17 §2: the page reads service/state/holdout.py store_report's contract; a store with no
    holdout and no held-out data says off."""
    contract = {"percent": 0, "status": "off", "customers_needed": None, "effect": None, "ci95": None,
                "points_reminded": 0, "points_saved": None, "sar_saved": None}
    assert {key: OFF[key] for key in contract} == contract and isinstance(OFF["stages"], list)


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_the_holdout_panel_renders_each_status(lang):
    """Issue 17 §2: off says what turning it on would show and how; not_enough_data "about N more
    customers"; ok the effect with its interval, points and SAR saved."""
    off = view.holdout_panel(OFF, lang)
    assert off["status"] == "off" and len(off["lines"]) == 2 and off["stages"] == []
    assert ("Holdout share" if lang == "en" else "نسبة مجموعة المقارنة") in off["lines"][1]
    waiting = view.holdout_panel(WAITING, lang)
    assert "1,240" in waiting["lines"][0] and "10" in waiting["lines"][0] and not waiting["stages"]
    ok = view.holdout_panel(OK, lang)
    assert "+15.2" in ok["lines"][0] and "+8.1" in ok["lines"][0] and "+22.3" in ok["lines"][0]
    assert "7,600" in ok["lines"][1] and ("380" in ok["lines"][1] or "٣٨٠" in ok["lines"][1])
    assert ok["stages"][0]["reminded"] == 900 and ok["stages"][0]["ci95"] == ["+8.0", "+22.0"]


def test_a_not_enough_data_panel_never_shows_a_number_for_the_effect():
    """Issue 17 §1: below the minimum sample the answer is "about N more customers", never a number."""
    panel = view.holdout_panel({**WAITING, "effect": 0.3, "ci95": [0.1, 0.5]}, "en")
    assert "+30" not in " ".join(panel["lines"]) and "about 1,240 more customers" in panel["lines"][0]


def test_the_chart_is_inline_svg_with_a_bar_per_stage_and_rtl_puts_the_newest_week_left():
    """Issue 17 §2: a chart of reminders and points saved per week by stage, drawn server-side."""
    weeks = [{"week": "2026-W47", "start": "2026-11-16", "stages": {30: {"sent": 2}, 7: {"sent": 1}}},
             {"week": "2026-W48", "start": "2026-11-23", "stages": {}},
             {"week": "2026-W49", "start": "2026-11-30", "stages": {7: {"sent": 5}}}]
    en = str(view.chart_svg(weeks, "sent", "en", "Reminders"))
    assert en.startswith("<svg") and "<script" not in en and "http" not in en.replace("http://www.w3.org/2000/svg", "")
    assert en.count("<rect") == 3 and "30 days before" in en and "7 days before" in en
    labels = lambda svg: re.findall(r'class="label">([^<]+)<', svg)  # noqa: E731
    assert labels(en) == ["11-16", "11-23", "11-30"]
    assert labels(str(view.chart_svg(weeks, "sent", "ar", "x"))) == ["11-30", "11-23", "11-16"]
    assert "<rect" not in str(view.chart_svg([{"week": "w", "start": "2026-11-30", "stages": {}}], "sent", "en", "x"))


def test_contacts_are_masked():
    """Issue 17 §2: the latest reminders with the contact masked."""
    assert view.mask_contact({"mobile": "+966512345678"}) == "+9665••••••78"
    assert view.mask_contact({"mobile": None, "email": "sara@example.com"}) == "s•••@example.com"
    assert view.mask_contact({}) == "—" and view.mask_contact(None) == "—"


def test_channels_show_set_up_rates_and_what_needs_the_merchant():
    """Issue 17 §2: each channel set up or not, delivered / failed rates, and what needs the merchant."""
    settings_view = {"channels": ["whatsapp", "sms"], "missing": ["sms.api_key"]}
    counts = {"channels": {"whatsapp": {"sent": 8, "delivered": 6, "read": 2, "failed": {"undeliverable": 2}}}}
    alarms = {"whatsapp_token": {"message": "operator text"}, "smtp_account": {"message": "x"}}
    rows = {row["name"]: row for row in view.channel_rows(settings_view, counts, alarms, "en")}
    assert rows["whatsapp"]["state"] == "set_up" and rows["whatsapp"]["delivered"] == 75.0
    assert rows["whatsapp"]["failed"] == 25.0 and rows["whatsapp"]["needs"] == [view.TEXTS["en"]["alarm_whatsapp_token"]]
    assert rows["sms"]["state"] == "needs_setup" and rows["sms"]["delivered"] is None
    assert rows["email"]["state"] == "not_used" and rows["email"]["needs"] == [view.TEXTS["en"]["alarm_smtp_account"]]
    assert "webhook" not in rows


def test_the_store_alarms_read_are_the_ones_the_providers_raise():
    """The page reads each store's alarms by name; the names are the providers' own."""
    from service.clients.channels import template_alarm
    from service.clients.providers import email, sms, whatsapp
    raised = {whatsapp.token_alarm(7), whatsapp.setup_alarm(7), sms.account_alarm(7), email.account_alarm(7),
              template_alarm(7)}
    assert raised == {f"{prefix}_7" for prefix in view.STORE_ALARMS}


def test_every_text_exists_in_both_languages():
    assert set(view.TEXTS["ar"]) == set(view.TEXTS["en"])
    assert view.stage_label(1, "en") == "1 day before" and view.stage_label(30, "ar") == "قبل 30 يومًا"
