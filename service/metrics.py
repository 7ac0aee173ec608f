"""Prometheus metrics: what each process counts, and what the web reads from Redis at scrape time.

Two kinds:
- Counters the processes increment as things happen (webhooks, Salla calls, token refreshes,
  reminders, points saved). gunicorn's workers and Celery's prefork children are separate
  processes, so prometheus-client runs in multiprocess mode: each process writes its values to
  files in PROMETHEUS_MULTIPROC_DIR and the process that serves the metrics adds them up
  (https://prometheus.github.io/client_python/multiprocess/).
- Gauges of the state in Redis (reads waiting per store, budget used, the due set, beat's
  liveness, alarms): one number for the whole deployment, whichever process reads it, so only
  the web's endpoint computes them, at scrape time (`RedisStateCollector`).

Where they are served: on METRICS_PORT, a port of its own (no route on the public port), by
the process that owns the group: gunicorn's master (service/gunicorn_conf.py), the Celery
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
import time
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
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

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
# The holdout (service/holdout.py), per stage and group only: never a store or a customer.
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


# -- Redis state, read at scrape time ------------------------------------------------------------
class RedisStateCollector:
    """Gauges from what Redis holds now. `state()` does the reading (one pipeline), `collect()`
    turns it into metric families; a Redis that does not answer gives `lpr_redis_up 0` and no
    other gauge, instead of failing the whole scrape."""

    def __init__(self, store, settings, clock=time.time):
        from service.keys import Keys

        self.redis = store
        self.settings = settings
        self.keys = Keys(settings.redis_key_prefix)
        self.clock = clock

    def state(self) -> dict:
        import redis as redis_lib

        from service.stores import StoreRegistry
        from workers.due_set import DueSet

        now = self.clock()
        s = self.settings
        try:
            merchants = StoreRegistry(self.redis, s.redis_key_prefix).merchants()
            due = DueSet(self.redis, s.redis_key_prefix, shards=s.due_set_shards)
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(due.shards):  # DUE_SET_SHARDS: four answers per shard
                scheduled_key, processing_key, _ = due.shard_keys(shard)
                pipe.zcard(scheduled_key)
                pipe.zcount(scheduled_key, "-inf", now)
                pipe.zrangebyscore(scheduled_key, "-inf", now, start=0, num=1, withscores=True)
                pipe.zcard(processing_key)
            pipe.get(self.keys.beat_last)
            pipe.get(self.keys.beat_alive)
            for m in merchants:
                k = self.keys.store(m)
                pipe.zcard(k.pending)
                pipe.zcard(k.inflight)
                pipe.zcount(k.budget_plan, now - s.plan_window_seconds, "+inf")
                pipe.zcount(k.budget_customer, now - s.customer_window_seconds, "+inf")
                pipe.zcard(k.inbox)
                pipe.zcount(k.dead, f"{time.time()}", "+inf")  # scored by expiry, on Redis's clock (ledger.py)
                pipe.hget(k.config, "plan_limit")
            answers = pipe.execute()
            alarms = [key.decode() if isinstance(key, bytes) else key
                      for key in self.redis.scan_iter(match=self.keys.alarm_pattern, count=100)]
            from service.holdout import pooled_by_stage
            holdout_sums = pooled_by_stage(self.redis, s.redis_key_prefix, merchants)
        except redis_lib.RedisError as exc:
            log.warning("metrics: Redis did not answer (%s); only lpr_redis_up is reported", type(exc).__name__)
            return {"redis_up": 0}
        shards, answers = answers[:4 * due.shards], answers[4 * due.shards:]
        scheduled = sum(shards[0::4])
        due_now = sum(shards[1::4])
        oldest = min((found[0] for found in shards[2::4] if found), key=lambda pair: pair[1], default=None)
        oldest = [oldest] if oldest else []
        processing = sum(shards[3::4])
        heartbeat, alive = answers[:2]
        per_store = {}
        for index, m in enumerate(merchants):
            pending, inflight, plan_used, customer_used, inbox, dead, plan_limit = answers[2 + 7 * index: 9 + 7 * index]
            per_store[m] = {"pending": pending, "inflight": inflight, "plan_used": plan_used,
                            "customer_used": customer_used, "inbox": inbox, "dead": dead,
                            "plan_limit": int(plan_limit) if plan_limit else s.plan_limit}
        return {
            "redis_up": 1,
            "due_scheduled": scheduled, "due_now": due_now, "due_processing": processing,
            "due_oldest_age": max(0.0, now - oldest[0][1]) if oldest else 0.0,
            "beat_heartbeat": _timestamp(heartbeat), "beat_alive": _float(alive),
            "alarms": sorted(name.rsplit(":", 1)[-1] for name in alarms),
            "stores": per_store,
            "holdout": holdout_sums,
        }

    def collect(self):
        state = self.state()
        yield _gauge("lpr_redis_up", "1 when Redis answered this scrape", state["redis_up"])
        if not state["redis_up"]:
            return
        yield _gauge("lpr_due_scheduled", "Entries in the due set (future and due reminders, timers, wake-ups)",
                     state["due_scheduled"])
        yield _gauge("lpr_due_now", "Due-set entries whose time has come and that no sweep has claimed yet",
                     state["due_now"])
        yield _gauge("lpr_due_processing", "Due-set entries claimed by a sweep (leased)", state["due_processing"])
        yield _gauge("lpr_due_oldest_age_seconds", "How long the oldest due, unclaimed entry has waited (0: none)",
                     state["due_oldest_age"])
        if state["beat_alive"] is not None:
            yield _gauge("lpr_beat_alive_timestamp_seconds", "When beat's scheduler last ticked (beat writes it)",
                         state["beat_alive"])
        if state["beat_heartbeat"] is not None:
            yield _gauge("lpr_beat_heartbeat_timestamp_seconds", "When a worker last ran beat's heartbeat task "
                         "(beat, broker and the sweep worker all alive)", state["beat_heartbeat"])
        alarms = GaugeMetricFamily("lpr_alarms_active", "Operator alarms raised and not cleared", labels=["name"])
        for name in state["alarms"]:
            alarms.add_metric([name], 1)
        yield alarms
        families = {
            "pending": GaugeMetricFamily("lpr_reads_pending", "Customers waiting for a history read, per store",
                                         labels=["merchant"]),
            "inflight": GaugeMetricFamily("lpr_reads_inflight", "History reads under way (leased), per store",
                                          labels=["merchant"]),
            "inbox": GaugeMetricFamily("lpr_inbox_events", "Accepted webhooks not yet handled, per store",
                                       labels=["merchant"]),
            "dead": GaugeMetricFamily("lpr_dead_letters", "Reminders that are dead letters, per store",
                                      labels=["merchant"]),
        }
        used = GaugeMetricFamily("lpr_budget_used", "Salla requests spent in the current window, per store and "
                                 "window (plan: per minute; customer: customer endpoints per 10 minutes)",
                                 labels=["merchant", "window"])
        limit = GaugeMetricFamily("lpr_budget_limit", "The budget's limit, per store and window",
                                  labels=["merchant", "window"])
        for m, values_ in sorted(state["stores"].items()):
            for name, family in families.items():
                family.add_metric([str(m)], values_[name])
            used.add_metric([str(m), "plan"], values_["plan_used"])
            used.add_metric([str(m), "customer"], values_["customer_used"])
            limit.add_metric([str(m), "plan"], values_["plan_limit"])
            limit.add_metric([str(m), "customer"], self.settings.customer_limit)
        yield from families.values()
        yield used
        yield limit
        yield from _holdout_families(state.get("holdout", {}))


def _holdout_families(sums: dict):
    """The holdout's figures per stage, every store's customers together (service/holdout.py):
    no store and no customer label. The effect only where both groups have enough customers."""
    from service.holdout import ALL, GROUPS, HELD_OUT, REMINDED
    from service.holdout_effect import GroupSums, effect, enough, lost_share, used_share

    customers = GaugeMetricFamily("lpr_holdout_customers", "Customers with settled lots, per stage and group "
                                  "(stage=\"all\": each lot at the first stage it reached)", labels=["stage", "group"])
    used = GaugeMetricFamily("lpr_holdout_used_share", "Of the points that reached the stage, the share used before "
                             "expiry, per stage and group", labels=["stage", "group"])
    lost = GaugeMetricFamily("lpr_holdout_lost_share", "Of the points that reached the stage, the share lost, per "
                             "stage and group", labels=["stage", "group"])
    found = GaugeMetricFamily("lpr_holdout_effect", "Used share of the reminded minus the held out, per stage "
                              "(only with enough customers in both groups)", labels=["stage"])
    low = GaugeMetricFamily("lpr_holdout_effect_ci95_low", "The effect's 95 % interval, lower end", labels=["stage"])
    high = GaugeMetricFamily("lpr_holdout_effect_ci95_high", "The effect's 95 % interval, upper end", labels=["stage"])
    saved = GaugeMetricFamily("lpr_holdout_points_saved", "Points saved by reminders: effect x points reminded "
                              "(stage=\"all\" only)", labels=["stage"])
    for stage in sorted({label for _, label in sums}):
        for group, name in GROUPS.items():
            sums_ = sums.get((group, stage))
            if sums_ is None:
                continue
            customers.add_metric([stage, name], sums_.customers)
            if sums_.points:
                used.add_metric([stage, name], used_share(sums_))
                lost.add_metric([stage, name], lost_share(sums_))
        reminded, held_out = sums.get((REMINDED, stage), GroupSums()), sums.get((HELD_OUT, stage), GroupSums())
        result = effect(reminded, held_out) if enough(reminded, held_out) else None
        if result is not None:
            found.add_metric([stage], result[0])
            low.add_metric([stage], result[1][0])
            high.add_metric([stage], result[1][1])
            if stage == ALL:
                saved.add_metric([stage], result[0] * reminded.points)
    yield from (customers, used, lost, found, low, high, saved)


def _gauge(name: str, documentation: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _float(raw) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _timestamp(raw) -> float | None:
    """beat:last holds an ISO time (workers/tasks.py heartbeat)."""
    if raw is None:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw).timestamp()
    except ValueError:
        return None


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
