"""The Prometheus gauges of the state in Redis, read at scrape time by the web's metrics port
(service/web/gunicorn_conf.py); the counters the processes increment live in service/config/metrics.py.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime

import redis as redis_lib

from service.config import metrics  # noqa: F401  first: it sets PROMETHEUS_MULTIPROC_DIR before prometheus_client loads
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

from service.domain.holdout_effect import GroupSums, effect, enough, lost_share, used_share
from service.state.due_set import DueSet
from service.state.holdout import ALL, GROUPS, HELD_OUT, REMINDED, pooled_by_stage
from service.state.keys import Keys
from service.state.stores import StoreRegistry

log = logging.getLogger(__name__)


class RedisStateCollector:
    """Gauges from what Redis holds now. `state()` does the reading (one pipeline), `collect()`
    turns it into metric families; a Redis that does not answer gives `lpr_redis_up 0` and no
    other gauge, instead of failing the whole scrape."""

    def __init__(self, store, settings, clock=time.time):
        self.redis = store
        self.settings = settings
        self.keys = Keys(settings.redis_key_prefix)
        self.clock = clock

    def state(self) -> dict:
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
    """The holdout's figures per stage, every store's customers together (service/state/holdout.py):
    no store and no customer label. The effect only where both groups have enough customers."""
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
    try:
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw).timestamp()
    except ValueError:
        return None


