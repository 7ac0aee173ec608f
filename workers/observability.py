"""Logs, metrics and correlation ids in the Celery processes (worker, beat), through Celery's signals.

- Logging: `setup_logging` is connected, so Celery leaves the root logger alone and every line
  is our JSON (service/config/logs.py). Run the commands with `celery -q` so that the startup banner
  (printed, not logged) is not written either.
- Correlation ids: a task published while one is set (a webhook's event being handled, a read
  started for it) carries it in the message header `lpr_cid`; the task that runs sets it again
  for its log lines and for what it publishes in turn. Headers carry ids only.
- Metrics: the worker's main process empties the metrics directory and serves METRICS_PORT
  (`worker_init`, before the pool forks); a prefork child that exits marks itself dead
  (`worker_process_shutdown`). See service/config/metrics.py.

https://docs.celeryq.dev/en/stable/userguide/signals.html
"""
from __future__ import annotations

import logging
import os
import sys

from celery import signals
from celery.apps import worker as celery_worker_app

from service.config import metrics
from service.config.logs import configure_logging, correlation_id, current_task, json_line

log = logging.getLogger(__name__)
CID_HEADER = "lpr_cid"


@signals.setup_logging.connect
def _logging(loglevel=None, **_):
    # Connected: Celery configures no logging of its own (no hijacked root logger, no colours).
    configure_logging(os.environ.get("LOG_LEVEL") or loglevel or "INFO")


def _say_as_json(msg, f=None):
    """Celery's worker writes a few lines straight to the terminal with os.write, bypassing
    logging ("worker: Warm shutdown (MainProcess)", from a signal handler, where taking a
    logging lock is unsafe). The same, lock-free, as one JSON line like every other."""
    stream = f if f is not None else sys.__stderr__
    try:
        os.write(stream.fileno(), (json_line("WARNING", "celery.apps.worker", str(msg).strip()) + "\n").encode())
    except (OSError, ValueError, AttributeError):
        pass  # best effort, as Celery's own


celery_worker_app.safe_say = _say_as_json


@signals.before_task_publish.connect
def _add_correlation_header(headers=None, **_):
    cid = correlation_id.get()
    if cid and headers is not None and CID_HEADER not in headers:
        headers[CID_HEADER] = cid


def cid_of(request) -> str | None:
    """The header as Celery hands it to the task: an attribute of the request, or (older
    message shapes) inside request.headers."""
    value = getattr(request, CID_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(CID_HEADER)
    return value if isinstance(value, str) and value else None


_tokens: dict[str, tuple] = {}


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, **_):
    _tokens[task_id] = (correlation_id.set(cid_of(task.request)), current_task.set((task.name, task_id)))


@signals.task_postrun.connect
def _task_finished(task_id=None, **_):
    tokens = _tokens.pop(task_id, None)
    if tokens:
        try:
            correlation_id.reset(tokens[0])
            current_task.reset(tokens[1])
        except ValueError:  # set in another context (should not happen): just clear
            correlation_id.set(None)
            current_task.set(None)


@signals.worker_init.connect
def _serve_metrics(**_):
    port = metrics.metrics_port()
    if port is None:
        return
    metrics.prepare_directory()  # before the pool forks: no child holds a file yet
    metrics.serve(port)


@signals.worker_process_shutdown.connect
def _child_exit(pid=None, **_):
    metrics.process_dead(pid or os.getpid())
