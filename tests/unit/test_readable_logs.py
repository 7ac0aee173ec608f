"""Issue 16 item 4, logs a person can read: LOG_FORMAT=text is one short line (time, process,
level, message, correlation id) under `make run`; JSON stays the default everywhere else."""
from __future__ import annotations

import io
import json
import logging
import re

import pytest

from service.config import logs
from service.config.settings import Settings, SettingsError
from tests.conftest import TOKEN_KEY


def _record(msg: str, level=logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("workers.reading", level, __file__, 1, msg, None, None)


def test_text_is_one_short_line_with_time_process_level_message_and_correlation_id():
    """Issue 16 item 4: under `make run` each line is one short human-readable line."""
    token = logs.correlation_id.set("a1b2c3d4e5f60718")
    try:
        line = logs.TextFormatter(role="reads").format(_record("read customer 5 of merchant 7 (shopper@example.com)"))
    finally:
        logs.correlation_id.reset(token)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} reads INFO read customer 5 of merchant 7 \(\[email\]\) \[a1b2c3d4e5f60718\]",
                        line), line
    assert "\n" not in line and len(line) < 100


def test_json_stays_the_default_and_text_is_chosen_by_log_format(monkeypatch):
    """Issue 16 item 4: JSON by default (containers) and wherever LOG_FORMAT=json; text on request."""
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert logs.configured_format() == "json"
    assert Settings.from_env({"TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SALLA_WEBHOOK_SECRET": "x"}).log_format == "json"
    assert Settings.from_env({"TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SALLA_WEBHOOK_SECRET": "x",
                              "LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SALLA_WEBHOOK_SECRET": "x", "LOG_FORMAT": "xml"})
    for chosen, check in (("json", lambda line: json.loads(line)["msg"] == "hello"),
                          ("text", lambda line: line.endswith(" INFO hello") and not line.startswith("{"))):
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers = []
        stream = io.StringIO()
        try:
            monkeypatch.setenv("LOG_FORMAT", chosen)
            logs.configure_logging("INFO", stream=stream)
            logging.getLogger("t").info("hello")
        finally:
            root.handlers = saved
        assert check(stream.getvalue().strip()), (chosen, stream.getvalue())
        formatter = logs.gunicorn_logconfig("INFO")["formatters"]["json"]["()"]
        assert formatter == {"json": "service.config.logs.JsonFormatter", "text": "service.config.logs.TextFormatter"}[chosen]


def test_make_run_sets_text_unless_env_says_otherwise():
    from pathlib import Path
    source = Path("devkit/run.py").read_text()
    assert 'os.environ.setdefault("LOG_FORMAT", "text")' in source
