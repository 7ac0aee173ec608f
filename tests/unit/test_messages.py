"""Arabic that reads right: plurals, dates, money, direction, SMS segments, templates."""
from datetime import date, datetime, timedelta, timezone

import pytest

from service.domain import arabic
from service.domain.events import Customer
from service.domain.expiry import StageGroup
from service.domain.loyalty import Lot
from service.domain.messages import (SAMPLE_REMINDER, Renderer, TemplateProblem, check_template, plain_message,
                              whatsapp_parameters)
from service.domain.reminders import build_reminder

RIYADH = timezone(timedelta(hours=3))


@pytest.mark.parametrize("count, text", [
    (1, "نقطة واحدة"), (2, "نقطتان"), (3, "3 نقاط"), (10, "10 نقاط"), (11, "11 نقطة"), (400, "400 نقطة"),
    (0, "0 نقطة")])
def test_arabic_points_agree_with_the_number(count, text):
    assert arabic.points_ar(count) == text


def test_english_points():
    assert arabic.points_en(1) == "1 point" and arabic.points_en(2500) == "2,500 points"


def test_dates_have_arabic_months_and_the_umm_al_qura_date_alongside():
    assert arabic.gregorian(date(2026, 11, 29), "ar") == "29 نوفمبر 2026"
    assert arabic.hijri(date(2026, 11, 29), "ar") == "19 جمادى الآخرة 1448 هـ"
    assert arabic.long_date(datetime(2026, 11, 29, 1, 4, tzinfo=RIYADH), "ar") == "29 نوفمبر 2026 الموافق 19 جمادى الآخرة 1448 هـ"
    assert arabic.long_date(date(2026, 3, 1), "en") == "1 March 2026 (12 Ramadan 1447 AH)"
    assert arabic.hijri(date(2090, 1, 1), "ar") == ""  # outside Umm al-Qura's table: Gregorian only
    assert arabic.long_date(date(2090, 1, 1), "ar") == "1 يناير 2090"


def test_sar_for_ar_sa_and_en():
    assert arabic.sar(150, "ar") == "\u200f150.00\u00a0ر.س.\u200f"
    assert arabic.sar(1234.5, "ar") == "\u200f1,234.50\u00a0ر.س.\u200f"
    assert arabic.sar(20, "en") == "SAR\u00a020.00"
    assert arabic.sar(None, "ar") == ""


def test_direction_helpers():
    assert str(arabic.ltr("<1>")) == '<span dir="ltr">&lt;1&gt;</span>'
    assert arabic.rtl_plain("123 نقطة\n\nمرحباً") == "\u200f123 نقطة\n\n\u200fمرحباً"


@pytest.mark.parametrize("text, encoding, parts", [
    ("a" * 160, "GSM-7", 1), ("a" * 161, "GSM-7", 2), ("a" * 306, "GSM-7", 2), ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1), ("€" * 81, "GSM-7", 2),  # extension characters count twice
    ("ن" * 70, "UCS-2", 1), ("ن" * 71, "UCS-2", 2), ("ن" * 134, "UCS-2", 2), ("ن" * 135, "UCS-2", 3),
    ("a" * 69 + "ن", "UCS-2", 1),  # one Arabic letter makes the whole message UCS-2
    ("😀" * 35, "UCS-2", 1), ("😀" * 36, "UCS-2", 2),  # outside the BMP: two UTF-16 units each
])
def test_sms_segments(text, encoding, parts):
    segments = arabic.sms_segments(text)
    assert (segments.encoding, segments.parts) == (encoding, parts)


def test_fit_sms_cuts_at_a_word_with_an_ellipsis():
    text = " ".join(["كلمة"] * 40)
    cut = arabic.fit_sms(text, 2)
    assert arabic.sms_segments(cut).parts == 2 and cut.endswith("…") and cut.startswith("كلمة كلمة")
    assert arabic.fit_sms("قصيرة", 1) == "قصيرة"


def _reminder(**changes):
    return {**SAMPLE_REMINDER, **changes}


def test_arabic_sms_reads_right_and_fits_two_segments():
    sms = Renderer().sms(_reminder(), "متجر الورد")
    assert sms.startswith("\u200fسارة، لديك 400 نقطة في متجر الورد تنتهي في 29 نوفمبر 2026 الموافق 19 جمادى الآخرة 1448 هـ")
    assert "\u200f20.00\u00a0ر.س.\u200f" in sms and "2026-11-29" not in sms
    assert arabic.sms_segments(sms).parts == 2


def test_english_for_english_customers_and_the_fallback_name():
    sms = Renderer().sms(_reminder(language="en", customer={"name": ""}, value_sar=None))
    assert sms == ("Hi there, 400 points expire on 29 November 2026 (19 Jumada al-Akhirah 1448 AH). "
                   "Use them before they are gone!")
    assert "عميلنا العزيز" in Renderer().sms(_reminder(customer={}))


def test_lots_on_several_days_say_from():
    reminder = _reminder(lots=[{"expires_at": "2026-11-29T23:59:00+03:00"}, {"expires_at": "2026-12-02T10:00:00+03:00"}])
    assert "تبدأ بالانتهاء في 29 نوفمبر" in Renderer().sms(reminder)
    assert "start expiring on 29 November" in Renderer().sms({**reminder, "language": "en"})


def test_email_arabic_html_is_right_to_left_everywhere_with_numbers_left_to_right():
    rendered = Renderer().render(_reminder(), "متجر الورد", "https://svc.example/unsubscribe/tok")
    html = rendered.html
    assert '<html lang="ar" dir="rtl">' in html and '<body dir="rtl"' in html
    import re
    for tag in re.findall(r"<(?:table|td)\b[^>]*>", html):
        assert 'dir="rtl"' in tag and "direction:rtl" in tag, tag
    assert '<span dir="ltr">400</span> نقطة' in html and '<span dir="ltr">20.00</span>' in html
    assert 'href="https://svc.example/unsubscribe/tok"' in html
    assert rendered.subject == "400 نقطة في متجر الورد تنتهي صلاحيتها قريباً"
    assert all(line.startswith("\u200f") for line in rendered.text.splitlines() if line.strip())
    assert "https://svc.example/unsubscribe/tok" in rendered.text


def test_email_english_is_left_to_right_and_escapes_names():
    rendered = Renderer().render(_reminder(language="en", customer={"name": "<b>Sam</b>"}), "", "https://u/x")
    assert '<html lang="en" dir="ltr">' in rendered.html and "&lt;b&gt;Sam&lt;/b&gt;" in rendered.html
    assert rendered.subject == "400 points expire soon" and "\u200f" not in rendered.text


def test_whatsapp_parameters_in_template_order():
    assert whatsapp_parameters(_reminder(), "متجر الورد") == [
        "سارة", "400 نقطة", "\u200f20.00\u00a0ر.س.\u200f", "29 نوفمبر 2026 الموافق 19 جمادى الآخرة 1448 هـ", "متجر الورد"]
    assert whatsapp_parameters(_reminder(value_sar=None), "")[2::2] == ["-", "-"]


def test_a_store_override_is_used_and_a_bad_one_is_refused_naming_the_line():
    assert Renderer({"sms.ar.txt": "{{ name }}: {{ points_text }}"}).sms(_reminder()) == "\u200fسارة: 400 نقطة"
    with pytest.raises(TemplateProblem, match=r"sms.ar.txt, line 2: .*'nme' is undefined"):
        check_template("sms.ar.txt", "hello\n{{ nme }}")
    with pytest.raises(TemplateProblem, match=r"email.ar.html, line 3: unexpected '}'"):
        check_template("email.ar.html", "<p>\n</p>\n{{ name }\n")
    with pytest.raises(TemplateProblem, match="unknown template"):
        check_template("sms.fr.txt", "x")
    with pytest.raises(TemplateProblem, match="empty"):
        check_template("sms.en.txt", "  ")
    for name in ("sms.ar.txt", "email.en.html", "email_subject.ar.txt", "email.ar.txt"):
        check_template(name, open(f"service/domain/templates/{name}", encoding="utf-8").read())  # the shipped ones pass


def test_build_reminder_message_has_no_iso_date():
    lot = Lot(key="k", name="n", points=50, used_points=10, status="مؤكدة",
              created_at=datetime(2026, 1, 1, tzinfo=RIYADH), expires_at=datetime(2026, 12, 1, 12, tzinfo=RIYADH),
              order_id=None, reference_id=None)
    customer = Customer(7, "Sara", None, None, None)
    reminder = build_reminder(1, customer, StageGroup(7, (lot,)), "en", datetime(2026, 11, 25, tzinfo=timezone.utc), 0.5)
    assert reminder["message"] == ("Hi Sara, 40 points expire on 1 December 2026 (21 Jumada al-Akhirah 1448 AH) "
                                   "(worth SAR\u00a020.00). Use them before they are gone!")
    arabic_text = build_reminder(1, customer, StageGroup(7, (lot,)), "ar", datetime(2026, 11, 25, tzinfo=timezone.utc))
    assert "40 نقطة" in arabic_text["message"] and "2026-12-01" not in arabic_text["message"]
    assert "\u200f" not in arabic_text["message"]
    assert plain_message(arabic_text, "متجر").count("متجر") == 1
