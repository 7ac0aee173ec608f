"""Arabic (and English) that reads right: plurals, dates, money, direction, SMS segments. Pure.

- Number agreement for "point" (نقطة): 1 نقطة واحدة, 2 نقطتان, 3-10 N نقاط, 11 and up N نقطة
  (the rule as the product states it; 0 reads 0 نقطة).
- Dates: the Gregorian date with Arabic month names (Babel's ar_SA, Western digits as Saudi
  shops print them) and the Umm al-Qura Hijri date alongside (hijridate). Never ISO in shopper text.
- Money: SAR formatted by Babel for ar_SA (`‏150.00 ر.س.‏`) or en (`SAR 150.00`).
- Direction: numbers inside Arabic HTML go in `<span dir="ltr">`; Arabic plain text lines start
  with U+200F (RIGHT-TO-LEFT MARK) so a line that opens with a digit or a Latin name still lays
  out right to left in mail clients and terminals.
- SMS: GSM-7 (160 characters, 153 per part when concatenated, extension characters count twice)
  or UCS-2 (70, 67 per part, counted in UTF-16 code units) as soon as one character is outside
  GSM-7, which every Arabic letter is.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from babel.dates import format_date
from babel.numbers import format_currency
from hijridate import Gregorian
from markupsafe import Markup, escape

RLM = "\u200f"
LANGUAGES = ("ar", "en")


# -- plurals --------------------------------------------------------------------------------
def points_ar(count: int) -> str:
    """'نقطة واحدة', 'نقطتان', '3 نقاط', '11 نقطة' (the number agrees with the noun)."""
    if count == 1:
        return "نقطة واحدة"
    if count == 2:
        return "نقطتان"
    if 3 <= count <= 10:
        return f"{count} نقاط"
    return f"{count} نقطة"


def points_en(count: int) -> str:
    return "1 point" if count == 1 else f"{count:,} points"


def points_phrase(count: int, language: str) -> str:
    return points_ar(count) if language == "ar" else points_en(count)


# -- dates ----------------------------------------------------------------------------------
def hijri(day: date, language: str) -> str:
    """'19 جمادى الآخرة 1448 هـ' / '19 Jumada al-Akhirah 1448 AH' (Umm al-Qura)."""
    try:
        h = Gregorian(day.year, day.month, day.day).to_hijri()
    except (OverflowError, ValueError):  # outside Umm al-Qura's table (1924-2077): Gregorian only
        return ""
    lang = "ar" if language == "ar" else "en"
    return f"{h.day} {h.month_name(lang)} {h.year} {h.notation(lang)}"


def gregorian(day: date, language: str) -> str:
    """'29 نوفمبر 2026' / '29 November 2026'."""
    return format_date(day, "d MMMM y", locale="ar_SA" if language == "ar" else "en")


def long_date(moment: datetime | date, language: str) -> str:
    """The Gregorian date with the Hijri date alongside: '29 نوفمبر 2026 الموافق 19 جمادى الآخرة 1448 هـ',
    '29 November 2026 (19 Jumada al-Akhirah 1448 AH)'. Arabic says الموافق ("corresponding to")
    rather than brackets: brackets next to numbers reorder badly in right-to-left text."""
    day = moment.date() if isinstance(moment, datetime) else moment
    h = hijri(day, language)
    if not h:
        return gregorian(day, language)
    return f"{gregorian(day, 'ar')} الموافق {h}" if language == "ar" else f"{gregorian(day, language)} ({h})"


# -- money ----------------------------------------------------------------------------------
def sar(value: float | None, language: str) -> str:
    """'‏150.00 ر.س.‏' for ar_SA (Babel's marks included), 'SAR 150.00' for en; '' for None."""
    if value is None:
        return ""
    if language == "ar":
        return format_currency(value, "SAR", locale="ar_SA")
    return format_currency(value, "SAR", "\u00a4\u00a0#,##0.00", locale="en")


# -- direction ------------------------------------------------------------------------------
def ltr(value) -> Markup:
    """A number, code or amount kept left-to-right inside right-to-left HTML."""
    return Markup('<span dir="ltr">%s</span>') % escape(value)


def rtl_plain(text: str) -> str:
    """Every non-empty line starts with U+200F, so it lays out right to left whatever it opens with."""
    return "\n".join(RLM + line if line.strip() and not line.startswith(RLM) else line for line in text.split("\n"))


# -- SMS segments ---------------------------------------------------------------------------
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2)
    parts: int

    @property
    def per_part(self) -> int:
        single, multi = (160, 153) if self.encoding == "GSM-7" else (70, 67)
        return single if self.parts <= 1 else multi


def sms_segments(text: str) -> Segments:
    if all(ch in _GSM7 or ch in _GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in text)
        single, multi = 160, 153
        encoding = "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
        encoding = "UCS-2"
    parts = 1 if units <= single else -(-units // multi)
    return Segments(encoding, units, parts)


def fit_sms(text: str, max_parts: int) -> str:
    """`text` if it fits in `max_parts` segments, else cut at a word boundary with '…'."""
    if sms_segments(text).parts <= max_parts:
        return text
    words = text.split(" ")
    while len(words) > 1:
        words.pop()
        candidate = " ".join(words).rstrip("،,.") + "…"
        if sms_segments(candidate).parts <= max_parts:
            return candidate
    cut = text
    while cut and sms_segments(cut + "…").parts > max_parts:
        cut = cut[:-1]
    return cut + "…"
