"""Prometheus metrics: what each process counts, and what the web reads from Redis at scrape time.

Two kinds:
- Counters the processes increment as things happen (webhooks, Salla calls, token refreshes,
  reminders, points saved). gunicorn's workers and Celery's prefork children are separate
  processes, so prometheus-client runs in multiprocess mode: each process writes its values to
  files in PROMETHEUS_MULTIPROC_DIR and the process that serves the metrics adds them up
  (https://prometheus.github.io/client_python/multiprocess/).
- Gauges of the state in Redis (reads waiting per store, budget used, the due set, beat's
  liveness, alarms): one number for the whole deployment, whichever process reads it, so only
  the web's endpoint computes them, at scrape time (service/state/gauges.py `RedisStateCollector`).

Where they are served: on METRICS_PORT, a port of its own (no route on the public port), by
the process that owns the group: gunicorn's master (service/web/gunicorn_conf.py), the Celery
worker's main process (workers/observability.py). METRICS_PORT unset: nothing is served.

The directory: PROMETHEUS_MULTIPROC_DIR when set; else, when METRICS_PORT is set, a directory
named after the port (one per process group on a machine, so two groups never add up or wipe
each other's files). prometheus-client reads the variable when it is first imported, so this
module sets it before importing it, and is imported first by the gunicorn config and
workers/celery.py; when something imported prometheus-client before (the `celery` command
loads Flower's plugin), the value class is picked again (see below). It is emptied once per start, by
the group's first process, before any child exists (`prepare_directory`).

Every metric has labels, so no value (and no file) exists before the first increment: a
directory emptied at start never loses a value a live process holds.

Label values are bounded: an event name we do not know is `other`, a status is a number or a
word from a fixed list, merchant ids appear only in the Redis gauges (one series per store).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path


def metrics_port(environ=None) -> int | None:
    """METRICS_PORT as a port number, None when unset; a clear error for anything else."""
    text = (os.environ if environ is None else environ).get("METRICS_PORT", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"METRICS_PORT must be a TCP port number (1-65535), got {text!r}")
    return int(text)


def multiproc_directory(environ=None) -> str | None:
    env = os.environ if environ is None else environ
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        return env["PROMETHEUS_MULTIPROC_DIR"]
    port = metrics_port(env)
    if port is None:
        return None
    return os.path.join(tempfile.gettempdir(), f"lpr-metrics-{port}")


_DIR = multiproc_directory()
if _DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _DIR  # before prometheus_client is imported (see above)
    Path(_DIR).mkdir(parents=True, exist_ok=True)

from prometheus_client import CollectorRegistry, Counter, start_http_server  # noqa: E402
from prometheus_client import multiprocess, values  # noqa: E402

if _DIR and values.ValueClass is values.MutexValue:
    # Imported earlier by someone else: `celery` loads its plugins' commands at start, and
    # Flower's imports prometheus_client. The value class is picked per metric when it is
    # created, so picking it again here puts every metric below in multiprocess mode.
    values.ValueClass = values.get_value_class()

log = logging.getLogger(__name__)

# -- counters ----------------------------------------------------------------------------------
WEBHOOKS = Counter("lpr_webhooks_total", "Salla webhooks received, by event and outcome",
                   ["event", "outcome"])
SALLA_REQUESTS = Counter("lpr_salla_requests_total", "Calls to Salla by endpoint and answer (HTTP status, "
                         "timeout or connection_error)", ["endpoint", "status"])
SALLA_RATE_LIMITED = Counter("lpr_salla_rate_limited_total", "429 answers from Salla, by endpoint", ["endpoint"])
TOKEN_REFRESHES = Counter("lpr_token_refreshes_total", "Salla token refreshes by outcome", ["outcome"])
REMINDERS = Counter("lpr_reminders_total", "Reminders by state and channel (scheduled and dead are per "
                    "reminder: channel=\"any\")", ["state", "channel"])
POINTS_SAVED = Counter("lpr_points_saved_total", "Points reminded about and then redeemed before expiry, by stage",
                       ["stage"])
# The holdout (service/state/holdout.py), per stage and group only: never a store or a customer.
HOLDOUT_REMINDERS = Counter("lpr_holdout_reminders_total", "Reminders decided, by stage and group (reminded: "
                            "queued; held_out: recorded in the ledger, never sent)", ["stage", "group"])
HOLDOUT_POINTS = Counter("lpr_holdout_points_total", "Points of settled lots by the stage they reached, group and "
                         "outcome (reached, used before expiry, lost); stage=\"all\": each lot once", ["stage", "group",
                                                                                                   "outcome"])
ADMIN_AUTH_FAILURES = Counter("lpr_admin_auth_failures_total", "Refused admin API requests, by reason", ["reason"])

# Webhook outcomes, in the order the endpoint reaches them.
SIGNATURE_FAILED, BAD_REQUEST, IGNORED, DUPLICATE, QUEUED, UNAVAILABLE, APPLIED = (
    "signature_failed", "bad_request", "ignored", "duplicate", "queued", "unavailable", "applied")
_KNOWN_EVENT_PREFIXES = ("order.", "customer.", "app.", "abandoned.", "product.", "shipment.", "review.")
_MAX_EVENT_LABEL = 48


_webhook_counters: dict[tuple[str, str], object] = {}


def count_webhook(event: str | None, outcome: str) -> None:
    """One webhook more in lpr_webhooks_total. Each (event label, outcome) pair's counter is
    looked up once per process: prometheus-client's `labels()` cost a webhook about 3 µs."""
    key = (event_label(event), outcome)
    counter = _webhook_counters.get(key)
    if counter is None:
        counter = _webhook_counters[key] = WEBHOOKS.labels(*key)
    counter.inc()


def event_label(event: str | None) -> str:
    """A bounded label for an event name: unknown for no name, `other` for a shape we never expect."""
    if not event:
        return "unknown"
    if len(event) > _MAX_EVENT_LABEL or not event.startswith(_KNOWN_EVENT_PREFIXES):
        return "other"
    return event


def status_label(status: int | None, error: str | None = None) -> str:
    return str(status) if status is not None else (error or "error")


def count_salla_call(endpoint: str, status: int | None, error: str | None = None) -> None:
    SALLA_REQUESTS.labels(endpoint, status_label(status, error)).inc()
    if status == 429:
        SALLA_RATE_LIMITED.labels(endpoint).inc()


# -- serving ---------------------------------------------------------------------------------------
def multiprocess_mode() -> bool:
    return values.ValueClass is not values.MutexValue


def prepare_directory() -> None:
    """Empty this group's directory: called once per start by the group's first process, before
    any child exists (a previous run's files would otherwise be added to this run's counts)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def process_dead(pid: int) -> None:
    """A child exited: its live-gauge files go (counters stay: they are totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def build_registry(extra_collectors=()) -> CollectorRegistry:
    registry = CollectorRegistry()
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:  # one process: its own counters (a test, or METRICS_PORT unset)
        from prometheus_client import REGISTRY

        registry = REGISTRY
    for collector in extra_collectors:
        registry.register(collector)
    return registry


_served: dict[int, object] = {}


def serve(port: int, extra_collectors=(), addr: str | None = None) -> None:
    """Serve the group's metrics on `port` (once per process: gunicorn calls its hooks again on
    a reload). METRICS_ADDRESS picks the interface (0.0.0.0 by default: Prometheus scrapes
    from elsewhere; keep the port off the public network)."""
    if port in _served:
        return
    if not multiprocess_mode():
        log.warning("metrics: prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set; only this "
                    "process's own values are served")
    addr = addr or os.environ.get("METRICS_ADDRESS", "0.0.0.0")
    _served[port] = start_http_server(port, addr=addr, registry=build_registry(extra_collectors))
    log.info("metrics served on %s:%d (directory %s)", addr, port, os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
