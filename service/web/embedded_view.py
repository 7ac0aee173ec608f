"""What the merchant's page in the Salla dashboard shows: read from aggregates, drawn on the server.

`gather` reads one store's figures (service/state/store_figures.py, the holdout report, channels,
alarms, latest reminders, dead letters) in a few round trips, never a scan of customers;
`render` draws the page (service/web/web_templates/embedded.html) with the chart as inline SVG,
so that nothing but Salla's SDK script is loaded from outside. The pure parts (texts, masks,
the chart, the holdout panel) are unit-tested with plain dicts.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from service.state import holdout, store_figures
from service.domain.arabic import sar
from service.state.channel_settings import ChannelSettings
from service.domain.store_policy import policy_for
from service.state.stores import ConfigError
from service.state.ledger import Ledger, status_counts  # plain Redis reads, as service/web/admin.py uses them

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "web_templates"
SHOPPER_CHANNELS = ("whatsapp", "sms", "email", "webhook")
DEAD_LETTERS_SHOWN = 10
# Per store alarms (service/state/alarms.py) that only the merchant can fix, by the prefix of their
# name before `_<merchant>` (the providers raise them: service/clients/providers/*.py, service/clients/channels.py;
# tests/unit/test_embedded_view.py checks the names still match).
STORE_ALARMS = {
    "whatsapp_token": ("whatsapp", "alarm_whatsapp_token"),
    "whatsapp_setup": ("whatsapp", "alarm_whatsapp_setup"),
    "sms_account": ("sms", "alarm_sms_account"),
    "smtp_account": ("email", "alarm_smtp_account"),
    "template": (None, "alarm_template"),
}
STAGE_COLOURS = ("#004956", "#1b8a80", "#5fcbb4", "#baf3e6", "#8aa8ad")

TEXTS = {
    "ar": {
        "title": "تذكير النقاط قبل انتهائها", "this_month": "هذا الشهر",
        "saved": "نقاط استُخدمت بعد التذكير", "sent": "تذكيرات أُرسلت", "reached": "عملاء وصلهم التذكير",
        "chart_sent": "التذكيرات أسبوعيًا حسب المرحلة", "chart_saved": "النقاط المستخدمة بعد التذكير أسبوعيًا",
        "stage": "قبل {days} يوم", "no_data": "لا توجد بيانات بعد",
        "holdout": "ما الذي تسببه التذكيرات فعلًا", "holdout_off":
            "القياس متوقف. عند تفعيله لا يصل التذكير إلى نسبة صغيرة من العملاء تُختار عشوائيًا، فنقارن استخدامهم "
            "للنقاط بمن وصلهم التذكير لنعرف النقاط التي أنقذتها التذكيرات فعلًا، مع هامش الثقة.",
        "holdout_how": "فعّله من إعدادات التطبيق: «نسبة مجموعة المقارنة» (مثلًا 10٪).",
        "holdout_wait": "القياس يعمل على {percent}٪ من العملاء. لا توجد بيانات كافية بعد: نحتاج نحو {n} عميل إضافي.",
        "holdout_ok": "التذكيرات رفعت استخدام النقاط بمقدار {effect} نقطة مئوية (95٪: من {lo} إلى {hi}).",
        "holdout_saved": "نقاط أنقذتها التذكيرات: {points} ({sar}).",
        "holdout_stage": "المرحلة", "holdout_effect": "الأثر", "reminded": "وصلهم التذكير", "held_out": "مجموعة المقارنة",
        "channels": "القنوات", "set_up": "مفعّلة", "needs_setup": "تحتاج إعدادًا", "not_used": "غير مستخدمة",
        "delivered": "وصلت", "failed": "فشلت", "needs_you": "يحتاج تدخّلك",
        "alarm_whatsapp_token": "رمز واتساب مرفوض: أدخل رمزًا جديدًا.",
        "alarm_whatsapp_setup": "إعداد واتساب مرفوض (رقم الهاتف أو القالب أو لغته).",
        "alarm_sms_account": "حساب الرسائل النصية يرفض الإرسال (الرصيد أو اسم المرسل أو المفتاح).",
        "alarm_smtp_account": "خادم البريد يرفض تسجيل الدخول.",
        "alarm_template": "قالب رسالتك المخصّص فيه خطأ، ويُرسل القالب الافتراضي بدلًا منه.",
        "latest": "آخر التذكيرات", "when": "الوقت", "customer": "العميل", "points": "النقاط", "state": "الحالة",
        "dead": "رسائل لم تصل", "retry": "إعادة الإرسال", "no_dead": "لا توجد رسائل عالقة.",
        "replayed": "أُعيدت الرسالة إلى قائمة الإرسال.", "not_found": "لم تعد هذه الرسالة عالقة.",
        "settings": "إعدادات التطبيق", "settings_hint": "القنوات ومراحل التذكير وقيمة النقطة ومجموعة المقارنة",
        "open_from_salla": "افتح هذه الصفحة من لوحة تحكم سلة.",
        "open_from_salla_hint": "انتهت صلاحية الجلسة أو لم يمكن التحقق منها.",
        "unavailable": "تعذّر التحقق من سلة الآن. حاول مرة أخرى بعد قليل.",
        "down": "لا يمكن عرض الصفحة الآن. حاول مرة أخرى بعد قليل.",
        "off": "هذه الصفحة غير مفعّلة على هذا الخادم.",
        "forbidden": "لم يُقبل الطلب. أعد تحميل الصفحة من لوحة تحكم سلة.",
    },
    "en": {
        "title": "Points expiry reminders", "this_month": "This month",
        "saved": "Points used after a reminder", "sent": "Reminders sent", "reached": "Shoppers reached",
        "chart_sent": "Reminders per week, by stage", "chart_saved": "Points used after a reminder, per week",
        "stage": "{days} days before", "no_data": "No data yet",
        "holdout": "What reminders really cause", "holdout_off":
            "Measuring is off. Turned on, a small random share of shoppers gets no reminder, and comparing how "
            "they use their points with those reminded shows the points reminders really saved, with its margin.",
        "holdout_how": "Turn it on in the app's settings: \u201cHoldout share\u201d (for example 10 %).",
        "holdout_wait": "Measuring on {percent} % of shoppers. Not enough data yet: about {n} more customers.",
        "holdout_ok": "Reminders raised points use by {effect} points of percentage (95 %: {lo} to {hi}).",
        "holdout_saved": "Points saved by reminders: {points} ({sar}).",
        "holdout_stage": "Stage", "holdout_effect": "Effect", "reminded": "Reminded", "held_out": "Held out",
        "channels": "Channels", "set_up": "Set up", "needs_setup": "Needs settings", "not_used": "Not used",
        "delivered": "delivered", "failed": "failed", "needs_you": "Needs you",
        "alarm_whatsapp_token": "WhatsApp refuses the access token: enter a new one.",
        "alarm_whatsapp_setup": "WhatsApp refuses the set-up (phone number, template or its language).",
        "alarm_sms_account": "The SMS account refuses to send (credit, sender name or key).",
        "alarm_smtp_account": "The mail server refuses the login.",
        "alarm_template": "Your custom message template has an error; the default one is sent instead.",
        "latest": "Latest reminders", "when": "When", "customer": "Customer", "points": "Points", "state": "State",
        "dead": "Messages that did not go out", "retry": "Send again", "no_dead": "No message is stuck.",
        "replayed": "The message is queued again.", "not_found": "That message is no longer stuck.",
        "settings": "App settings", "settings_hint": "Channels, reminder stages, point value and holdout",
        "open_from_salla": "Open this page from your Salla dashboard.",
        "open_from_salla_hint": "The session has expired or could not be verified.",
        "unavailable": "Salla could not be asked just now. Try again in a moment.",
        "down": "The page cannot be shown just now. Try again in a moment.",
        "off": "This page is not turned on on this server.",
        "forbidden": "The request was refused. Reload the page from your Salla dashboard.",
    },
}
CHANNEL_NAMES = {"ar": {"whatsapp": "واتساب", "sms": "رسائل نصية", "email": "البريد", "webhook": "Webhook"},
                 "en": {"whatsapp": "WhatsApp", "sms": "SMS", "email": "E-mail", "webhook": "Webhook"}}


# -- pure helpers --------------------------------------------------------------------------------
def mask_contact(customer: dict | None) -> str:
    """A shopper's mobile or e-mail, enough to recognise, not to use: +9665•••••67, s•••@example.com."""
    customer = customer or {}
    mobile, email = customer.get("mobile"), customer.get("email")
    if mobile:
        digits = str(mobile)
        return digits[:5] + "•" * max(len(digits) - 7, 3) + digits[-2:] if len(digits) > 7 else "•" * len(digits)
    if email and "@" in str(email):
        name, _, domain = str(email).partition("@")
        return f"{name[:1]}•••@{domain}"
    return "—"


def rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def stage_label(days: int, lang: str) -> str:
    if lang == "en":
        return f"{days} day before" if days == 1 else TEXTS[lang]["stage"].format(days=days)
    # Arabic counts: one and two have their own words, 3-10 take the plural, 11 and more the singular.
    if days == 1:
        return "قبل يوم واحد"
    if days == 2:
        return "قبل يومين"
    return f"قبل {days} أيام" if 3 <= days <= 10 else f"قبل {days} يومًا"


def chart_svg(weeks: list[dict], metric: str, lang: str, title: str) -> Markup:
    """Stacked bars per week, one colour per stage, as inline SVG (no script, no external file).
    Right to left in Arabic: the newest week on the left, as time reads there."""
    stages = sorted({s for week in weeks for s in week["stages"]}, reverse=True)
    totals = [sum(week["stages"].get(s, {}).get(metric, 0) for s in stages) for week in weeks]
    top = max(totals + [1])
    width, height, pad, bottom = 900, 180, 8, 28
    slot = (width - 2 * pad) / max(len(weeks), 1)
    order = list(range(len(weeks)))[::-1] if lang == "ar" else list(range(len(weeks)))
    parts = [f'<svg class="chart" data-metric="{escape(metric)}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad}" y1="{height - bottom}" x2="{width - pad}" y2="{height - bottom}" class="axis"/>']
    for position, index in enumerate(order):
        week = weeks[index]
        x = pad + position * slot + slot * 0.2
        y = height - bottom
        for n, stage in enumerate(stages):
            value = week["stages"].get(stage, {}).get(metric, 0)
            if not value:
                continue
            h = (height - bottom - 20) * value / top
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}" '
                         f'fill="{STAGE_COLOURS[n % len(STAGE_COLOURS)]}"><title>{escape(stage_label(stage, lang))}: '
                         f'{value:,}</title></rect>')
        if totals[index]:
            parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{y - 4:.1f}" text-anchor="middle" class="value">'
                         f'{totals[index]:,}</text>')
        parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{height - 10}" text-anchor="middle" class="label">'
                     f'{escape(week["start"][5:])}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><i class="swatch s{n % len(STAGE_COLOURS)}"></i>'
                     f'{escape(stage_label(stage, lang))}</span>' for n, stage in enumerate(stages))
    return Markup("".join(parts) + f'<div class="legend">{legend}</div>')


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f}"


def holdout_panel(report: dict, lang: str) -> dict:
    """The holdout panel's lines for each status of service/state/holdout.py's report."""
    t = TEXTS[lang]
    status = report.get("status")
    if status == "ok":
        lo, hi = report.get("ci95") or (None, None)
        lines = [t["holdout_ok"].format(effect=_percent(report.get("effect")), lo=_percent(lo), hi=_percent(hi))]
        if report.get("points_saved") is not None:
            lines.append(t["holdout_saved"].format(points=f"{round(report['points_saved']):,}",
                                                   sar=sar(report.get("sar_saved") or 0.0, lang)))
        stages = [{"label": stage_label(s["stage_days"], lang), "effect": _percent(s.get("effect")),
                   "ci95": [_percent(v) for v in (s.get("ci95") or (None, None))],
                   "reminded": s.get("reminded", {}).get("customers", 0),
                   "held_out": s.get("held_out", {}).get("customers", 0)} for s in report.get("stages", [])]
        return {"status": "ok", "lines": lines, "stages": stages}
    if status == "not_enough_data":
        return {"status": status, "lines": [t["holdout_wait"].format(percent=report.get("percent", 0),
                                                                     n=f"{report.get('customers_needed') or 0:,}")],
                "stages": []}
    return {"status": "off", "lines": [t["holdout_off"], t["holdout_how"]], "stages": []}


def channel_rows(view: dict, counts: dict, alarms: dict[str, dict], lang: str) -> list[dict]:
    """Each shopper channel: set up or not, delivered / failed rates, and what needs the merchant."""
    listed, missing = view.get("channels", []), view.get("missing", [])
    rows = []
    for name in SHOPPER_CHANNELS:
        if name not in listed and name == "webhook":
            continue  # the merchant's own receiver: shown only when the store uses it
        if name not in listed:
            state = "not_used"
        else:
            state = "needs_setup" if any(field.startswith(name + ".") for field in missing) else "set_up"
        c = counts.get("channels", {}).get(name, {})
        sent = c.get("sent", 0)
        failed = sum(c.get("failed", {}).values())
        needs = [TEXTS[lang][key] for channel, key in (STORE_ALARMS[prefix] for prefix in alarms)
                 if channel == name]
        rows.append({"name": name, "label": CHANNEL_NAMES[lang][name], "state": state, "sent": sent,
                     "delivered": rate(c.get("delivered", 0), sent), "failed": rate(failed, sent), "needs": needs})
    return rows


# -- reading a store -------------------------------------------------------------------------------
def store_alarms(store, prefix: str, merchant_id: int) -> dict[str, dict]:
    pipe = store.pipeline(transaction=False)
    for name in STORE_ALARMS:
        pipe.hgetall(f"{prefix}alarm:{name}_{merchant_id}")
    return {name: found for name, found in zip(STORE_ALARMS, pipe.execute()) if found}


def gather(deps, merchant_id: int, now: float) -> dict:
    """Everything the page shows for the session's merchant (and nobody else's)."""
    settings, store, prefix = deps.settings, deps.redis, deps.settings.redis_key_prefix
    figures = store_figures.read(store, deps.keys, merchant_id, now)
    policy = policy_for(settings, deps.registry.config(merchant_id))
    ledger = Ledger(store, prefix)
    try:
        channels = ChannelSettings(store, prefix, settings).view(merchant_id)
    except ConfigError as exc:  # settings that cannot be read: the page still shows the rest
        log.warning("merchant %s: channel settings unreadable on the embedded page: %s", merchant_id, exc)
        channels = {"channels": [], "missing": []}
    recent = [ledger.get(merchant_id, rid) for rid in figures["recent"]]
    return {
        "merchant_id": merchant_id,
        "figures": figures,
        "point_value_sar": policy.point_value_sar,
        "holdout": holdout.store_report(store, prefix, merchant_id, settings, now),
        "channels": channels,
        "statuses": status_counts(store, deps.keys, merchant_id),
        "alarms": store_alarms(store, prefix, merchant_id),
        "recent": [_reminder_row(record) for record in recent if record is not None],
        "dead": [_reminder_row(record) for record in ledger.dead_letters(merchant_id, DEAD_LETTERS_SHOWN)],
    }


def _reminder_row(record) -> dict:
    body = record.reminder
    return {"id": record.reminder_id, "stage": record.stage, "state": record.state,
            "at": record.sent_at or record.updated_at, "points": body.get("points_expiring") or 0,
            "contact": mask_contact(body.get("customer")), "channels": sorted(record.channels),
            "error": (record.last_error or "")[:120]}


# -- the page ----------------------------------------------------------------------------------------
_environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True))


def _when(at: float, lang: str) -> str:
    return datetime.fromtimestamp(at, store_figures.RIYADH).strftime("%Y-%m-%d %H:%M") if at else "—"


def page_context(data: dict, lang: str) -> dict:
    month = data["figures"]["month"]
    rate_sar = data["point_value_sar"]
    return {
        "saved_points": f"{month['points_saved']:,}",
        "saved_sar": sar(month["points_saved"] * rate_sar, lang) if rate_sar else "",
        "sent": f"{month['sent']:,}", "reached": f"{month['reached']:,}",
        "chart_sent": chart_svg(data["figures"]["weeks"], "sent", lang, TEXTS[lang]["chart_sent"]),
        "chart_saved": chart_svg(data["figures"]["weeks"], "points_saved", lang, TEXTS[lang]["chart_saved"]),
        "holdout": holdout_panel(data["holdout"], lang),
        "channels": channel_rows(data["channels"], data["statuses"], data["alarms"], lang),
        "general_alarms": [TEXTS[lang][STORE_ALARMS[name][1]] for name in data["alarms"]
                           if STORE_ALARMS[name][0] is None],
        "recent": [{**row, "when": _when(row["at"], lang), "stage_label": stage_label(row["stage"], lang),
                    "points": f"{row['points']:,}", "channels": [CHANNEL_NAMES[lang].get(ch, ch) for ch in row["channels"]]}
                   for row in data["recent"]],
        "dead": [{**row, "when": _when(row["at"], lang), "stage_label": stage_label(row["stage"], lang),
                  "points": f"{row['points']:,}"} for row in data["dead"]],
    }


def render(template: str, **context) -> str:
    lang = context.get("lang", "ar")
    return _environment.get_template(template).render(t=TEXTS[lang], dir="rtl" if lang == "ar" else "ltr",
                                                      **context)


def now() -> float:
    return datetime.now(timezone.utc).timestamp()
