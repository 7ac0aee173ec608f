"""The reminder e-mails in a real browser: headless Chromium (Debian's package, installed here
when missing) renders both to PNG, and says itself whether the Arabic body runs right to left."""
from __future__ import annotations

import pytest

from devkit.email_preview import ensure_chromium, layout, render_emails, screenshot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def chromium():
    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"no Chromium for the e-mail rendering test: {why}")
    return path


@pytest.fixture(scope="module")
def emails(tmp_path_factory):
    return render_emails(tmp_path_factory.mktemp("emails"))


def test_both_emails_render_to_png(chromium, emails, tmp_path):
    for lang, html in emails.items():
        png = screenshot(chromium, html, tmp_path / f"email-{lang}.png")
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, lang  # a picture with something on it
        print(f"{lang}: {png}")


def test_the_arabic_body_is_laid_out_right_to_left_in_the_browser(chromium, emails):
    found = layout(chromium, emails["ar"])
    assert found["root"] == "rtl" and found["body"] == "rtl"
    assert set(found["cells"]) == {"rtl"} and found["cells"]["rtl"] >= 6  # every table and cell
    for block in found["blocks"]:
        first, last, box = block["first"], block["last"], block["box"]
        assert block["words"] >= 2, block
        assert first["left"] > last["left"], block  # the first word stands to the right of the next ones
        assert abs(box["right"] - first["right"]) <= 2, block  # and the line starts at the right edge
        assert first["left"] - box["left"] > 100 or block["id"] == "message", block


def test_the_english_body_is_left_to_right(chromium, emails):
    found = layout(chromium, emails["en"])
    assert found["root"] == "ltr" and set(found["cells"]) == {"ltr"}
    for block in found["blocks"]:
        assert block["first"]["left"] < block["last"]["left"] and abs(block["first"]["left"] - block["box"]["left"]) <= 2
