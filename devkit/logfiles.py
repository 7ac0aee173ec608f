"""Reading the JSON log lines (service/config/logs.py) back: for tests, drills and `make demo`."""
from __future__ import annotations

import json


def json_lines(text: str) -> list[dict]:
    """Each line that is a JSON object (a supervisor's `12:00:01 web.1 | ` prefix is skipped)."""
    found = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def reminders_in(text: str) -> list[dict]:
    """The `log` channel's reminders (service/clients/channels.py LogChannel), in order."""
    return [line["data"] for line in json_lines(text) if line.get("logger") == "reminders" and "data" in line]
