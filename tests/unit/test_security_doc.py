"""docs/SECURITY.md names, for every limit, the test that shows it: each named test must exist,
so a renamed or deleted test cannot leave the threat model pointing at nothing (issue 15 item 7)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `tests/x.py::test_name`, `tests/x.py`, or `::test_name` (the last file named before it)
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def references(text: str) -> list[tuple[str, str | None]]:
    found, current = [], None
    for match in _REFERENCE.finditer(text):
        if match.group(1):
            current = match.group(1)
            found.append((current, match.group(2)))
        else:
            assert current, f"`::{match.group(3)}` before any test file is named"
            found.append((current, match.group(3)))
    return found


def test_every_test_the_threat_model_names_exists():
    refs = references((ROOT / "docs" / "SECURITY.md").read_text(encoding="utf-8"))
    assert len(refs) > 30, "the threat model names the tests that show its limits"
    missing = [f"{path}::{name}" if name else path for path, name in refs
               if not (ROOT / path).exists() or (name and f"def {name}(" not in (ROOT / path).read_text(encoding="utf-8"))]
    assert missing == []


def test_a_reference_to_a_missing_test_is_caught():
    refs = references("`tests/unit/test_webhook.py::test_no_such_test` and `::test_token_strategy`")
    assert refs == [("tests/unit/test_webhook.py", "test_no_such_test"), ("tests/unit/test_webhook.py", "test_token_strategy")]
    assert "def test_no_such_test(" not in (ROOT / refs[0][0]).read_text(encoding="utf-8")
