"""One log format for web and workers: one JSON object per line, on stderr.

LOG_FORMAT=text (what `make run` sets) writes the same records as one short line a person can
read instead: `14:03:07.412 reads INFO message [cid]` (TextFormatter). JSON stays the default:
containers and anything else that feeds a log collector.

Each line: `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `msg`, `process` (the
role: web, worker, beat; LOG_PROCESS_NAME or guessed from the command), `pid`, and when known
`cid` (the correlation id of the webhook this work came from), `task` and `task_id` (a Celery
task), and `exc` (a traceback). A log aggregator needs no parsing rule: `jq 'select(.cid=="...")'`
follows one webhook through the web, the read and each delivery.

Nothing here ever receives a token, a request body or a shopper's name, mobile or e-mail: the
callers log ids only (merchant, customer, reminder, correlation). `scrub` is a last line of
defence for the free text of exceptions from libraries (an e-mail address or a long digit run
in a provider's error text is masked).
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

# The correlation id of the work under way in this thread (a webhook's request, a task).
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
# The Celery task under way (name, id), set by workers/observability.py.
current_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("current_task", default=None)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# International numbers with their +, and Saudi mobiles written locally (05XXXXXXXX) or without
# the + (9665XXXXXXXX). Not any long digit run: merchant and customer ids must stay readable.
_PHONE = re.compile(r"\+\d[\d\s-]{7,}\d|\b(?:0|966)5\d{8}\b")
_SECRET = re.compile(r"(?i)(token|secret|password|authorization)([\"']?\s*[=:]\s*[\"']?)[^\s\"',}&]+")
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',}]+")


def new_correlation_id() -> str:
    """16 random hex digits."""
    return os.urandom(8).hex()


def scrub(text: str) -> str:
    """Mask e-mail addresses, phone-like digit runs and `token=...`-like values in free text."""
    text = _EMAIL.sub("[email]", text)
    text = _PHONE.sub("[number]", text)
    text = _BEARER.sub("Bearer [redacted]", text)
    return _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


def process_role(argv: list[str] | None = None) -> str:
    """web, worker, beat or flower from the command line (LOG_PROCESS_NAME wins)."""
    named = os.environ.get("LOG_PROCESS_NAME")
    if named:
        return named
    words = " ".join(argv if argv is not None else sys.argv)
    if "gunicorn" in words:
        return "web"
    for role in ("beat", "flower", "worker"):
        if f" {role}" in f" {words}":
            return role
    return os.path.basename((argv or sys.argv or ["python"])[0]) or "python"


def configured_format(environ=None) -> str:
    """json or text, from LOG_FORMAT (settings.py refuses anything else at start; here, before
    settings are read, anything but text is json)."""
    value = (os.environ if environ is None else environ).get("LOG_FORMAT", "").strip().lower()
    return "text" if value == "text" else "json"


class TextFormatter(logging.Formatter):
    """One short line for a person: local time, process, level, message, [correlation id].
    The same scrubbing as the JSON lines; a traceback follows on its own lines."""

    def __init__(self, role: str | None = None):
        super().__init__()
        self.role = role or process_role()

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created)
        line = f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d} {self.role} {record.levelname} {scrub(record.getMessage())}"
        cid = getattr(record, "cid", None) or correlation_id.get()
        if cid:
            line += f" [{cid}]"
        if record.exc_info:
            line += "\n" + scrub(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str | None = None):
        super().__init__()
        self.role = role or process_role()

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "process": self.role,
            "pid": record.process,
        }
        cid = getattr(record, "cid", None) or correlation_id.get()
        if cid:
            line["cid"] = cid
        task = current_task.get()
        if task:
            line["task"], line["task_id"] = task
        # Structured fields: logger.info(..., extra={"lpr_data": {...}}). Not `data`: Celery puts a
        # task's args there, and only fields we chose go out.
        data = getattr(record, "lpr_data", None)
        if isinstance(data, dict):
            line["data"] = data
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = scrub(self.formatStack(record.stack_info))
        # Default separators (", " and ": "), so `"stage_days": 7` reads the same in a line as in code.
        return json.dumps(line, ensure_ascii=False, default=str)


def json_line(level: str, logger: str, msg: str) -> str:
    """One line in the same shape (LOG_FORMAT's), for the few places that cannot go through logging."""
    if configured_format() == "text":
        return TextFormatter().format(logging.LogRecord(logger, getattr(logging, level, logging.INFO), "", 0, msg, None,
                                                        None))
    return json.dumps({"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level,
                       "logger": logger, "msg": scrub(msg), "process": process_role(), "pid": os.getpid()},
                      ensure_ascii=False)


def configure_logging(level: str = "INFO", stream=None, log_format: str | None = None) -> None:
    """JSON lines (or LOG_FORMAT=text lines) on stderr for the root logger, once per process.
    Celery adds no handler of its own (workers/observability.py connects `setup_logging`),
    gunicorn's loggers have their own config (gunicorn_logconfig)."""
    root = logging.getLogger()
    # Under gunicorn, its logconfig_dict (gunicorn_logconfig) already gave the root logger a
    # handler of ours before the app was loaded: a second one wrote every line twice.
    ours = [h for h in root.handlers
            if getattr(h, "_lpr", False) or isinstance(h.formatter, (JsonFormatter, TextFormatter))]
    if not ours:
        handler = logging.StreamHandler(stream or sys.stderr)
        text = (log_format or configured_format()) == "text"
        handler.setFormatter(TextFormatter() if text else JsonFormatter())
        handler._lpr = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings (Celery's SecurityWarning, deprecations) as log lines too, not raw stderr text.
    logging.captureWarnings(True)
    # Libraries that log request lines or bodies at INFO/DEBUG: their lines would add nothing
    # an operator needs, and urllib3 at DEBUG names URLs with query strings.
    for noisy in ("urllib3", "requests", "amqp", "kombu"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def gunicorn_logconfig(level: str = "INFO", log_format: str | None = None) -> dict:
    """gunicorn's `logconfig_dict`: its error log and access log as JSON lines too (text lines
    under LOG_FORMAT=text)."""
    formatter = "TextFormatter" if (log_format or configured_format()) == "text" else "JsonFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"service.config.logs.{formatter}", "role": "web"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        },
    }
