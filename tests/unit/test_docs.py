"""The docs site and the README (issue 16, "What to build" item 2).

The site is built the way CI builds it, `mkdocs build --strict`, so a broken link, a missing
anchor, a page left out of the nav or a link out of docs/ fails the test run. The README stays
a front page: at most 10 KB, with the processes `make run` starts and links that resolve.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.procfile import read_procfile

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


@pytest.mark.slow
def test_the_docs_site_builds_with_strict(tmp_path):
    """Issue 16 item 2: `mkdocs build --strict` green (broken links and anchors, pages not in the nav, links
    out of docs/ fail)."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "openapi.yaml").exists()  # the admin API page links the contract


@pytest.mark.slow
@pytest.mark.parametrize("link, complaint", [
    ("b.md#no-such-heading", "no-such-heading"),      # an anchor mkdocs reports at INFO unless told
    ("../README.md", "README.md"),                     # a link out of docs/
    ("c.md", "c.md"),                                  # a page that does not exist
])
def test_strict_fails_on_a_broken_link_or_anchor(tmp_path, link, complaint):
    """Issue 16 item 2: our mkdocs.yml makes --strict fail on broken anchors and links out of docs/, not only
    on missing files (a throwaway site with the same settings)."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(tmp_path / "docs"), nav=["a.md", "b.md"])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(f"# A\n\nSee [there]({link}).\n")
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## A heading\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--site-dir", str(tmp_path / "site")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout + result.stderr
    assert complaint in result.stderr


def test_the_readme_is_at_most_10_kb():
    """Issue 16 item 2: the README becomes at most 10 KB."""
    assert len(README.read_bytes()) <= 10_240


def test_the_readme_names_every_process_make_run_starts():
    """Issue 16 item 2: a quickstart with a table of the processes (and ports) `make run` starts."""
    readme = README.read_text(encoding="utf-8")
    table = {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", readme, re.M)}
    assert {entry.name for entry in read_procfile(ROOT / "Procfile")} <= table
    for port in ("8000", "5555", "6389"):  # web, Flower, the embedded Redis
        assert port in readme
    assert "make run" in readme and "make test" in readme


def test_the_readmes_links_resolve():
    """Issue 16 item 2: the README links the docs (relative links GitHub follows without a site)."""
    readme = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert len([link for link in local if link.startswith("docs/")]) >= 10
    for link in local:
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"


# Sentences that tell the project's history instead of how the product works.
HISTORY = ["the drills caught one", "the old behaviour", "this 2-core machine", "used to ", "the old crash",
           "had to change", "passed before", "before the fix"]
MEASUREMENT_PAGES = {"benchmarks.md", "CAPACITY.md", "RELIABILITY.md"}  # may say where a figure was measured


def test_user_docs_speak_of_the_product_not_its_history():
    """Issue 16 item 2: user docs speak of the product, not of its history."""
    pages = [README] + [p for p in DOCS.glob("*.md") if p.name not in MEASUREMENT_PAGES]
    for page in pages:
        text = page.read_text(encoding="utf-8").lower()
        for phrase in HISTORY:
            assert phrase not in text, f"{page.name} says {phrase!r}"
