"""gunicorn's settings for the web process: `gunicorn -c python:service.web.gunicorn_conf ...`.

- Logs: gunicorn's error and access logs as JSON lines (service/config/logs.py), like the app's.
- Metrics (METRICS_PORT set): the master empties the metrics directory before the first fork
  (`on_starting`), serves every worker's counters added up plus the Redis gauges on
  METRICS_PORT (`when_ready`), and marks a worker that exits dead (`child_exit`), as
  prometheus-client's multiprocess guide says for gunicorn.
- The admin API on its own port (ADMIN_PORT set): the master also binds it, and the app
  answers /admin/* only on that port (service/ops/admin_guard.py).

gunicorn reads this module's globals as settings, so helpers are underscored.
"""
from __future__ import annotations

import os as _os

from gunicorn import glogging as _glogging

# First: it sets PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported.
from service.config import metrics as _metrics  # isort: skip
from service.web.access_log import scrub_atoms as _scrub_atoms
from service.config.logs import gunicorn_logconfig as _logconfig

logconfig_dict = _logconfig(_os.environ.get("LOG_LEVEL", "INFO").upper())
# The access log in the JSON line's `msg`: no query string and no referrer; the secrets of the
# fields it has (unsubscribe and SMS report tokens in paths) are masked (service/web/access_log.py).
# Off unless WEB_ACCESS_LOG=1: lpr_webhooks_total counts every webhook's outcome, the drain
# logs each accepted one under its correlation id, and a line per request cost the web a share
# of its throughput in bench/ingest.py (docs/benchmarks.md).
accesslog = "-" if _os.environ.get("WEB_ACCESS_LOG", "").strip().lower() in ("1", "true", "on", "yes") else None
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


class _Logger(_glogging.Logger):
    """gunicorn takes any logconfig_dict for "access log on" and builds and writes the line
    whatever `accesslog` says; here `accesslog` (WEB_ACCESS_LOG) decides, before the line's
    fields are built."""

    def access(self, resp, req, environ, request_time):
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)

    def atoms(self, resp, req, environ, request_time):
        # Whatever access_log_format names, its fields come out scrubbed.
        return _scrub_atoms(super().atoms(resp, req, environ, request_time))


logger_class = _Logger

# The public port (PORT), and the admin API's own port when ADMIN_PORT is set (a --bind on the
# command line would replace both: leave it out).
bind = [f"{_os.environ.get('BIND_ADDRESS', '0.0.0.0')}:{_os.environ.get('PORT', '8000')}"]
_admin_port = _os.environ.get("ADMIN_PORT", "").strip()
if _admin_port:
    bind.append(f"{_os.environ.get('ADMIN_ADDRESS', '127.0.0.1')}:{_admin_port}")


def on_starting(server):
    # A missing or wrong setting: one line and exit 2 here, in the master, rather than a
    # traceback from every worker that fails to boot.
    from service.config.settings import settings_or_exit
    settings_or_exit()
    if _metrics.metrics_port() is not None:
        _metrics.prepare_directory()


def when_ready(server):
    port = _metrics.metrics_port()
    if port is None:
        return
    from service.state.gauges import RedisStateCollector
    from service.state.redis_client import connect
    from service.config.settings import Settings

    settings = Settings.from_env()
    _metrics.serve(port, [RedisStateCollector(connect(settings), settings)])


def child_exit(server, worker):
    _metrics.process_dead(worker.pid)
