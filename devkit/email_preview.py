"""The reminder e-mails as a shopper sees them: rendered by headless Chromium to PNG, and their
layout measured in the browser (is the Arabic body really laid out right to left?).

`python -m devkit.email_preview [OUT_DIR]` (default docs/) writes email-ar.png and email-en.png
(docs/templates.md shows them). The tests call the same functions (tests/integration/test_email_rendering.py).

Chromium is Debian's `chromium` package; `ensure_chromium()` installs it with apt-get when it is
missing and we are root, and otherwise says why not. It runs with `--headless --no-sandbox
--disable-gpu --disable-quic --no-first-run --disable-background-networking
--disable-component-update --disable-sync` and a throwaway profile, so it talks to nothing.

The layout check is the browser's own answer, not a reading of our HTML: a copy of the e-mail
gets a small script that records the computed `direction` of the root, the body and every table
and cell, and where the first and last words of the greeting and the message's first line sit
(Range.getBoundingClientRect), into a <pre id="layout-check">, which `--dump-dom` prints.
Playwright's Python package could drive the same /usr/bin/chromium (`executable_path`), but it
brings a Node driver and a pinned protocol for what two command-line flags already do here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from service.domain.messages import SAMPLE_REMINDER, Renderer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]
STORE_NAME = "متجر الورد"
SAMPLE = {**SAMPLE_REMINDER, "customer": {"name": "سارة", "mobile": None, "email": "sara@example.com"},
          "points_expiring": 400, "value_sar": 20.0}
SAMPLE_EN = {**SAMPLE, "language": "en", "customer": {"name": "Sarah", "mobile": None, "email": "sarah@example.com"}}

_PROBE = """<script>
(function () {
  function wordRects(el) {
    var walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT), node, rects = [];
    while ((node = walker.nextNode())) {
      var re = /\\S+/g, m;
      while ((m = re.exec(node.textContent))) {
        var range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        var r = range.getBoundingClientRect();
        if (r.width > 0) rects.push({word: m[0], left: r.left, right: r.right, top: r.top});
      }
    }
    return rects;
  }
  function box(el) {
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return {left: r.left + parseFloat(s.paddingLeft), right: r.right - parseFloat(s.paddingRight)};
  }
  var out = {root: getComputedStyle(document.documentElement).direction,
             body: getComputedStyle(document.body).direction, blocks: [], cells: {}};
  document.querySelectorAll('table, td').forEach(function (el) {
    var d = getComputedStyle(el).direction; out.cells[d] = (out.cells[d] || 0) + 1;
  });
  ['greeting', 'message'].forEach(function (id) {
    var el = document.getElementById(id); if (!el) return;
    var words = wordRects(el), top = words.length ? words[0].top : 0;
    var line = words.filter(function (w) { return Math.abs(w.top - top) < 4; });
    out.blocks.push({id: id, box: box(el), first: line[0], last: line[line.length - 1], words: words.length});
  });
  var pre = document.createElement('pre'); pre.id = 'layout-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
})();
</script>"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_chromium() -> tuple[str | None, str]:
    """(path, "") when Chromium is there or could be installed, else (None, why not)."""
    found = chromium_path()
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "chromium is not installed, and apt-get cannot install it here (not root, or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core"]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # the package lists may be missing or stale on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    found = chromium_path()
    return (found, "") if found else (None, f"apt-get install chromium failed: {result.stderr.strip()[-300:]}")


def render_emails(out_dir: Path) -> dict[str, Path]:
    """The Arabic and English e-mails' HTML, as the e-mail channel renders them, into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for lang, reminder in (("ar", SAMPLE), ("en", SAMPLE_EN)):
        html = Renderer().render(reminder, STORE_NAME, "https://reminders.example/unsubscribe/sample").html
        paths[lang] = out_dir / f"email-{lang}.html"
        paths[lang].write_text(html, encoding="utf-8")
    return paths


def _run(browser: str, args: list[str], profile: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


def screenshot(browser: str, html: Path, png: Path, width: int = 640, height: int = 340) -> Path:
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        result = _run(browser, [f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri()],
                      profile)
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium made no screenshot ({result.returncode}): {result.stderr[-500:]}")
    return png


def layout(browser: str, html: Path) -> dict:
    """What the browser measured (see the module's docstring)."""
    probe = html.with_name(html.stem + ".probe.html")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        result = _run(browser, ["--dump-dom", "--window-size=640,560", "--virtual-time-budget=2000",
                                probe.resolve().as_uri()], profile)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', result.stdout, re.S)
    if not found:
        raise RuntimeError(f"no layout in chromium's DOM ({result.returncode}): {result.stderr[-500:]}")
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["docs"])[0])
    browser, why = ensure_chromium()
    if browser is None:
        print(why, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="emails-") as tmp:
        for lang, html in render_emails(Path(tmp)).items():
            png = screenshot(browser, html, out / f"email-{lang}.png")
            print(f"{png}  ({lang}; layout: {layout(browser, html)['root']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
