"""What the shopper reads, rendered from a reminder. Pure code over Jinja2 templates.

Templates live in service/domain/templates/ (shipped as package data), one file per message part
and language: `sms.<lang>.txt`, `email_subject.<lang>.txt`, `email.<lang>.txt`,
`email.<lang>.html`. A store may override any of them (service/state/channel_settings.py keeps the
overrides); an override is checked when it is set (`check_template`): a syntax error, or a
name the template uses that does not exist, is refused there, naming the line, never at send
time. HTML templates are autoescaped; text templates are not. Templates run in a sandbox
(service/domain/template_sandbox.py): they read TEMPLATE_VARIABLES and nothing else, and their render is
bounded. An override that fails at send time anyway (stored before a check, or past a bound on
real data) is replaced by the shipped template, and the Renderer's `on_problem` is told.

WhatsApp sends an approved template held by Meta, so it has no file here: its body
parameters (`whatsapp_parameters`) are name, points, SAR value, expiry date, store name; the
expiry date carries `others_text` after it (the parameter count is the approved template's).

Stages due for a customer at the same moment go out as one message (service/domain/reminders.py): the
variables describe the nearest expiry, `others` lists the other stages (each with points,
points_text, value, expiry, expiry_gregorian, same_day, stage_days; empty for one stage),
`others_text` says them in one phrase ('' for one stage), total_points and total_points_text
add every stage up.

Variables every template gets (`context`): TEMPLATE_VARIABLES below, the one list of them (the
README's table is checked against it; `subject` is given to the HTML one only). Filters: `ltr` (wrap in a
left-to-right span), `numbers_ltr` (every run of digits in one), and the sandbox's SAFE_FILTER_NAMES.
"""
from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import ChoiceLoader, FileSystemLoader, FunctionLoader, TemplateError, TemplateSyntaxError
from markupsafe import Markup, escape

from service.domain import arabic
from service.domain.template_sandbox import TemplateSandbox, render

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
PARTS = ("sms", "email_subject", "email_text", "email_html")
_FILES = {"sms": "sms.{lang}.txt", "email_subject": "email_subject.{lang}.txt", "email_text": "email.{lang}.txt",
          "email_html": "email.{lang}.html"}
TEMPLATE_NAMES = tuple(_FILES[part].format(lang=lang) for part in PARTS for lang in arabic.LANGUAGES)
MAX_TEMPLATE_CHARS = 20_000
_FALLBACK_NAME = {"ar": "عميلنا العزيز", "en": "there"}
_DIGITS = re.compile(r"\d[\d.,٬٫]*\d|\d")

# Every name a template can read, with what it holds: `context` gives exactly these (a test holds
# them to it), the sandbox refuses any other name, and the README's table lists them. A new
# variable goes into `context` and here.
TEMPLATE_VARIABLES = {
    "name": "the shopper's name, else a greeting (عميلنا العزيز / there)",
    "points": "the points that expire (a number)",
    "points_text": "the number with the word 'point' agreeing with it (400 نقطة)",
    "value": "their value in SAR, formatted for the language; empty when the store sets no point value",
    "expiry": "the first expiry date, Gregorian with Arabic month names and the Umm al-Qura Hijri date alongside",
    "expiry_gregorian": "the first expiry date, Gregorian only",
    "expiry_hijri": "the first expiry date, Umm al-Qura Hijri only",
    "same_day": "true when every lot expires the same day",
    "store_name": "the store's name (empty when not set)",
    "stage_days": "the reminder's stage in days before the expiry (30, 7, 1)",
    "others": "the other stages due at the same moment, later expiries, each with points, points_text, value, "
              "expiry, expiry_gregorian, same_day, stage_days (empty for one stage)",
    "others_text": "the other stages in one phrase, to follow `expiry` (empty for one stage)",
    "total_points": "the points of every stage in the message, added up (a number)",
    "total_points_text": "the same, with the word 'point' agreeing with it",
    "unsubscribe_url": "the shopper's unsubscribe link (e-mail)",
    "language": "ar or en",
    "dir": "rtl or ltr",
    "subject": "the rendered e-mail subject (the HTML e-mail only)",
}


class TemplateProblem(ValueError):
    """A template that cannot be used; the message names the template and the line."""


def numbers_ltr(value) -> Markup:
    """Escape `value` and keep every run of digits left to right (`<span dir="ltr">`)."""
    text = str(escape(value))
    return Markup(_DIGITS.sub(lambda m: f'<span dir="ltr">{m.group(0)}</span>', text))


def _environment(overrides: dict[str, str] | None) -> TemplateSandbox:
    loaders = [FileSystemLoader(str(TEMPLATE_DIR))]
    if overrides:
        sources = dict(overrides)
        # The template's name as its file name: a traceback through it then names its line.
        loaders.insert(0, FunctionLoader(lambda name: (sources[name], name, lambda: True) if name in sources else None))
    return TemplateSandbox(TEMPLATE_VARIABLES, {"ltr": arabic.ltr, "numbers_ltr": numbers_ltr},
                           loader=ChoiceLoader(loaders), keep_trailing_newline=False,
                           autoescape=lambda name: bool(name and name.endswith(".html")))


_DEFAULT_ENV = _environment(None)


@dataclass(frozen=True)
class Rendered:
    language: str
    sms: str
    subject: str
    text: str
    html: str


def language_of(reminder: dict, language: str | None = None) -> str:
    chosen = language or reminder.get("language")
    return chosen if chosen in arabic.LANGUAGES else "ar"


def _other_stage(part: dict, lang: str) -> dict:
    """One more stage of a message that names several (`other_stages` of the reminder)."""
    first = datetime.fromisoformat(part["earliest_expiry"])
    expiries = [datetime.fromisoformat(lot["expires_at"]) for lot in part.get("lots", []) if lot.get("expires_at")]
    points = int(part["points_expiring"])
    return {"points": points, "points_text": arabic.points_phrase(points, lang),
            "value": arabic.sar(part.get("value_sar"), lang), "expiry": arabic.long_date(first, lang),
            "expiry_gregorian": arabic.gregorian(first.date(), lang),
            "same_day": max(expiries, default=first).date() == first.date(), "stage_days": int(part["stage_days"])}


def _others_text(others: list[dict], total: int, lang: str) -> str:
    """The other stages in one phrase, to follow the first stage's expiry date; '' when none.
    Gregorian dates only: it goes into an SMS, where every character counts."""
    if not others:
        return ""
    if lang == "ar":
        said = "".join(f"، و{o['points_text']} {'تنتهي في' if o['same_day'] else 'تبدأ بالانتهاء في'} "
                       f"{o['expiry_gregorian']}" for o in others)
        return f"{said}، والمجموع {arabic.points_phrase(total, lang)}"
    said = "".join(f", and {o['points_text']} {'expire on' if o['same_day'] else 'start expiring on'} "
                   f"{o['expiry_gregorian']}" for o in others)
    return f"{said} ({arabic.points_phrase(total, lang)} in all)"


def context(reminder: dict, store_name: str = "", unsubscribe_url: str = "", language: str | None = None) -> dict:
    lang = language_of(reminder, language)
    first = datetime.fromisoformat(reminder["earliest_expiry"])
    expiries = [datetime.fromisoformat(lot["expires_at"]) for lot in reminder.get("lots", []) if lot.get("expires_at")]
    last = max(expiries) if expiries else first
    name = ((reminder.get("customer") or {}).get("name") or "").strip() or _FALLBACK_NAME[lang]
    points = int(reminder["points_expiring"])
    others = [_other_stage(part, lang) for part in reminder.get("other_stages") or []]
    total = points + sum(other["points"] for other in others)
    return {
        "language": lang, "dir": "rtl" if lang == "ar" else "ltr",
        "name": name, "points": points, "points_text": arabic.points_phrase(points, lang),
        "value": arabic.sar(reminder.get("value_sar"), lang),
        "expiry": arabic.long_date(first, lang), "expiry_gregorian": arabic.gregorian(first.date(), lang),
        "expiry_hijri": arabic.hijri(first.date(), lang), "same_day": last.date() == first.date(),
        "store_name": store_name or "", "stage_days": int(reminder.get("stage_days", 0)),
        "unsubscribe_url": unsubscribe_url or "",
        "others": others, "others_text": _others_text(others, total, lang),
        "total_points": total, "total_points_text": arabic.points_phrase(total, lang),
    }


def _log_problem(name: str, problem: str) -> None:
    log.warning("template override %s failed, the shipped one is used: %s", name, problem)


class Renderer:
    """Renders a store's messages: its overrides first, the shipped templates otherwise.

    An override that fails here is replaced by the shipped template, so that the shopper still
    gets the reminder, and `on_problem(name, problem)` is called (workers raise an alarm)."""

    def __init__(self, overrides: dict[str, str] | None = None, on_problem=_log_problem):
        self.overrides = dict(overrides or {})
        self.env = _environment(self.overrides) if self.overrides else _DEFAULT_ENV
        self.on_problem = on_problem

    def _text(self, name: str, ctx: dict) -> str:
        if name in self.overrides:
            try:
                return render(self.env.get_template(name), ctx)
            except Exception as exc:  # refused by the sandbox, past a bound, a filter given the wrong type...
                self.on_problem(name, f"{type(exc).__name__}: {exc}"[:300])
        return render(_DEFAULT_ENV.get_template(name), ctx)

    def part(self, part: str, ctx: dict) -> str:
        text = self._text(_FILES[part].format(lang=ctx["language"]), ctx).strip()
        if part == "email_subject":
            return " ".join(text.split())  # one line, whatever the template's layout
        if part in ("sms", "email_text"):
            text = re.sub(r"\n{3,}", "\n\n", text)
            return arabic.rtl_plain(text) if ctx["language"] == "ar" else text
        return text

    def render(self, reminder: dict, store_name: str = "", unsubscribe_url: str = "",
               language: str | None = None) -> Rendered:
        ctx = context(reminder, store_name, unsubscribe_url, language)
        subject = self.part("email_subject", ctx)
        return Rendered(language=ctx["language"], sms=self.part("sms", ctx), subject=subject,
                        text=self.part("email_text", ctx), html=self.part("email_html", {**ctx, "subject": subject}))

    def sms(self, reminder: dict, store_name: str = "", language: str | None = None) -> str:
        return self.part("sms", context(reminder, store_name, "", language))


def plain_message(reminder: dict, store_name: str = "") -> str:
    """The shipped SMS text without direction marks: the `message` field of the webhook body."""
    return Renderer().sms(reminder, store_name).replace(arabic.RLM, "")


def whatsapp_parameters(reminder: dict, store_name: str = "", language: str | None = None) -> list[str]:
    """Body parameters of the approved template, in order: name, points, SAR value, expiry, store.
    Meta refuses empty parameters, so a missing value or store name is sent as '-'."""
    ctx = context(reminder, store_name, "", language)
    return [ctx["name"], ctx["points_text"], ctx["value"] or "-", ctx["expiry"] + ctx["others_text"],
            ctx["store_name"] or "-"]


# -- checking a store's override --------------------------------------------------------------
SAMPLE_REMINDER = {
    "reminder_id": "0" * 32, "merchant_id": 1, "customer_id": 1,
    "customer": {"name": "سارة", "mobile": "+966500000000", "email": "sara@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-29T23:59:00+03:00", "language": "ar",
    "value_sar": 20.0, "message": "", "lots": [{"key": "k", "expires_at": "2026-11-29T23:59:00+03:00"}],
    "generated_at": "2026-11-22T09:00:00+00:00",
}
SAMPLE_OTHER_STAGES = [{"stage_days": 30, "points_expiring": 80, "earliest_expiry": "2026-12-20T23:59:00+03:00",
                        "value_sar": None, "lots": [{"key": "m", "expires_at": "2026-12-20T23:59:00+03:00"}]}]


def check_template(name: str, source: str) -> None:
    """Raise TemplateProblem (naming the line) unless `source` can stand in for template `name`."""
    if name not in TEMPLATE_NAMES:
        raise TemplateProblem(f"unknown template {name!r} (known: {', '.join(TEMPLATE_NAMES)})")
    if not isinstance(source, str) or not source.strip():
        raise TemplateProblem(f"template {name}: it is empty")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(f"template {name}: longer than {MAX_TEMPLATE_CHARS} characters")
    env = _environment({name: source})
    try:
        template = env.get_template(name)
    except TemplateSyntaxError as exc:  # the sandbox's refusals too, naming the line
        raise TemplateProblem(f"template {name}, line {exc.lineno}: {exc.message}") from None
    except Exception as exc:  # nested too deep for the parser, say
        raise TemplateProblem(f"template {name}: {type(exc).__name__}") from None
    lang = name.split(".")[-2]
    for value, others in ((20.0, []), (None, SAMPLE_OTHER_STAGES)):  # the branches on the value and on `others`
        ctx = context({**SAMPLE_REMINDER, "value_sar": value, "other_stages": others}, "متجر", "https://example.com/u/x", lang)
        try:
            render(template, {**ctx, "subject": "subject"})
        except TemplateError as exc:
            raise TemplateProblem(f"template {name}, line {_template_line(name)}: {exc}") from None
        except Exception as exc:  # a filter given the wrong type, a division by zero...
            raise TemplateProblem(f"template {name}, line {_template_line(name)}: {type(exc).__name__}: {exc}") from None


def _template_line(name: str) -> str:
    """The template line of the exception being handled (Jinja rewrites tracebacks to point at it)."""
    tb, line = sys.exc_info()[2], None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return str(line) if line is not None else "?"
