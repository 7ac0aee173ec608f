"""Metrics, JSON logs and correlation ids, as plain functions and with fakeredis (the real
processes are in tests/integration/test_observability.py)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time

import fakeredis
import pytest
from prometheus_client import REGISTRY

from service.config import metrics
from service.state.gauges import RedisStateCollector
from service.web.app import create_app
from service.state.keys import Keys
from service.config.logs import JsonFormatter, configure_logging, correlation_id, gunicorn_logconfig, process_role, scrub
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, make_settings, sample


def sample_value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def enqueue(self, message, task=None):
        self.sent.append((task, message))


def test_event_labels_are_bounded():
    assert metrics.event_label("order.created") == "order.created"
    assert metrics.event_label(None) == "unknown"
    assert metrics.event_label("drop table") == "other"
    assert metrics.event_label("order." + "x" * 100) == "other"


def test_metrics_port_is_checked():
    assert metrics.metrics_port({}) is None
    assert metrics.metrics_port({"METRICS_PORT": "9100"}) == 9100
    with pytest.raises(ValueError, match="METRICS_PORT must be a TCP port"):
        metrics.metrics_port({"METRICS_PORT": "nine"})


def test_the_directory_is_named_after_the_port_unless_given():
    assert metrics.multiproc_directory({"METRICS_PORT": "9101"}).endswith("lpr-metrics-9101")
    assert metrics.multiproc_directory({"METRICS_PORT": "9101", "PROMETHEUS_MULTIPROC_DIR": "/x"}) == "/x"
    assert metrics.multiproc_directory({}) is None


def test_prepare_directory_empties_only_that_directory(tmp_path, monkeypatch):
    target = tmp_path / "m"
    target.mkdir()
    (target / "counter_1.db").write_bytes(b"x")
    (tmp_path / "other.db").write_bytes(b"y")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(target))
    metrics.prepare_directory()
    assert list(target.iterdir()) == [] and (tmp_path / "other.db").exists()


def test_webhook_outcomes_are_counted():
    store = fakeredis.FakeRedis(decode_responses=True)
    client = create_app(make_settings(), redis_client=store, queue=RecordingQueue()).test_client()
    before = {o: sample_value("lpr_webhooks_total", event=e, outcome=o) for e, o in (
        ("order.created", "queued"), ("order.created", "duplicate"), ("unknown", "signature_failed"))}
    body = json.dumps(sample("order.created.json")).encode()
    headers = {"Content-Type": "application/json", "X-Salla-Signature": sign(body, WEBHOOK_SECRET)}
    first = client.post("/webhooks/salla", data=body, headers=headers)
    client.post("/webhooks/salla", data=body, headers=headers)
    client.post("/webhooks/salla", data=body, headers={**headers, "X-Salla-Signature": "0" * 64})
    assert sample_value("lpr_webhooks_total", event="order.created", outcome="queued") == before["queued"] + 1
    assert sample_value("lpr_webhooks_total", event="order.created", outcome="duplicate") == before["duplicate"] + 1
    assert sample_value("lpr_webhooks_total", event="unknown", outcome="signature_failed") == \
        before["signature_failed"] + 1
    # The correlation id goes back to the caller and is stored with the event in the inbox.
    cid = first.headers["X-Correlation-Id"]
    [event] = [json.loads(raw) for raw in store.zrange(Keys("lpr:").store(1305146709).inbox, 0, -1)]
    assert event["cid"] == cid and len(cid) == 16


def test_every_answer_carries_its_own_correlation_id_and_none_outlives_the_request():
    store = fakeredis.FakeRedis(decode_responses=True)
    app = create_app(make_settings(WEBHOOK_MAX_BODY_BYTES="16384"), redis_client=store, queue=RecordingQueue())
    client = app.test_client()
    body = json.dumps(sample("order.created.json")).encode()
    answers = [client.post("/webhooks/salla", data=body, headers={"X-Salla-Signature": sign(body, WEBHOOK_SECRET)}),
               client.post("/webhooks/salla", data=b"x" * 32768),  # 413, from werkzeug
               client.get("/no-such-page"),  # 404
               client.get("/healthz")]
    assert [a.status_code for a in answers] == [200, 413, 404, 200]
    assert [a.get_json()["status"] for a in answers[:1]] == ["queued"] and answers[0].mimetype == "application/json"
    cids = [a.headers["X-Correlation-Id"] for a in answers]
    assert len(set(cids)) == 4 and all(len(c) == 16 and int(c, 16) >= 0 for c in cids)
    assert correlation_id.get() is None


def _seed(store, now):
    from service.state.due_set import DueEntry, DueSet

    keys = Keys("lpr:")
    store.sadd(keys.stores, 7)
    k = keys.store(7)
    store.zadd(k.pending, {"1": now, "2": now, "3": now + 5})
    store.zadd(k.inflight, {"4": now + 30})
    store.zadd(k.budget_plan, {"a": now - 10, "b": now - 20, "old": now - 120})
    store.zadd(k.budget_customer, {"a": now - 10, "b": now - 500, "old": now - 700})
    due = DueSet(store, "lpr:")
    due.schedule([(now - 42, DueEntry.for_reminder(7, 1, 7, "a" * 32)), (now + 600, DueEntry.for_reminder(7, 2, 7, "b" * 32))])
    store.set(keys.beat_alive, f"{now - 3:.3f}")
    store.set(keys.beat_last, "2026-01-01T00:00:00+00:00")
    store.hset(keys.alarm("oauth_client"), mapping={"message": "m"})


def test_the_redis_collector_reads_the_state_at_scrape_time():
    store = fakeredis.FakeRedis(decode_responses=True)
    now = 1_800_000_000.0
    _seed(store, now)
    collector = RedisStateCollector(store, make_settings(), clock=lambda: now)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in collector.collect() for s in family.samples}
    assert got[("lpr_redis_up", ())] == 1
    assert got[("lpr_due_scheduled", ())] == 2 and got[("lpr_due_now", ())] == 1
    assert got[("lpr_due_oldest_age_seconds", ())] == pytest.approx(42)
    assert got[("lpr_reads_pending", (("merchant", "7"),))] == 3
    assert got[("lpr_reads_inflight", (("merchant", "7"),))] == 1
    assert got[("lpr_budget_used", (("merchant", "7"), ("window", "plan")))] == 2
    assert got[("lpr_budget_used", (("merchant", "7"), ("window", "customer")))] == 2
    assert got[("lpr_budget_limit", (("merchant", "7"), ("window", "plan")))] == 120
    assert got[("lpr_beat_alive_timestamp_seconds", ())] == pytest.approx(now - 3)
    assert got[("lpr_beat_heartbeat_timestamp_seconds", ())] == pytest.approx(1767225600.0)
    assert got[("lpr_alarms_active", (("name", "oauth_client"),))] == 1


def test_a_redis_that_does_not_answer_is_one_gauge_not_a_failed_scrape():
    import redis

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    families = list(RedisStateCollector(dead, make_settings()).collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("lpr_redis_up", 0.0)]


def test_json_lines_carry_the_correlation_id_and_scrub_contact_data():
    stream = io.StringIO()
    logger = logging.getLogger("test.obs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("worker"))
    logger.addHandler(handler)
    try:
        token = correlation_id.set("c0ffee0000000001")
        logger.warning("provider said: no such user a.b@example.com at +966 50 123 4567 (token=abc)")
        correlation_id.reset(token)
        try:
            raise ValueError("boom for 0501234567")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["cid"] == "c0ffee0000000001" and first["process"] == "worker" and first["level"] == "WARNING"
    assert "example.com" not in first["msg"] and "123 4567" not in first["msg"] and "abc" not in first["msg"]
    assert "cid" not in second and "0501234567" not in second["exc"] and "ValueError" in second["exc"]


def test_scrub_keeps_ids_readable():
    assert scrub("merchant=1305146709 customer=1001 reminder 31402239f6f9ed63800c312e0c26a9cb") == \
        "merchant=1305146709 customer=1001 reminder 31402239f6f9ed63800c312e0c26a9cb"


def test_process_roles():
    assert process_role(["/venv/bin/gunicorn", "-c", "x"]) == "web"
    assert process_role(["celery", "-A", "workers", "-q", "worker"]) == "worker"
    assert process_role(["celery", "-A", "workers", "beat"]) == "beat"


def test_configure_logging_adds_one_handler_once():
    root = logging.getLogger()
    before = len(root.handlers)
    configure_logging("INFO")
    configure_logging("INFO")
    ours = [h for h in root.handlers if getattr(h, "_lpr", False)]
    assert len(ours) == 1 and len(root.handlers) <= before + 1


def test_the_app_adds_no_second_handler_under_gunicorns_log_config():
    """gunicorn's logconfig_dict gives the root logger a JSON handler before the app is
    loaded; the app's configure_logging must not add another (every line was written twice)."""
    import logging.config

    root = logging.getLogger()
    with _loggers_restored():
        root.handlers = []
        logging.config.dictConfig(gunicorn_logconfig("INFO"))
        configure_logging("INFO")
        json_handlers = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(json_handlers) == 1


@pytest.mark.parametrize("setting, written", [(None, False), ("1", True)])
def test_the_access_log_is_written_only_when_asked(monkeypatch, setting, written):
    """Off unless WEB_ACCESS_LOG=1. gunicorn counts any logconfig_dict as "access log on",
    so the logger class decides, before gunicorn builds the line's fields."""
    import importlib

    from gunicorn.config import Config

    from service.web import gunicorn_conf

    if setting is None:
        monkeypatch.delenv("WEB_ACCESS_LOG", raising=False)
    else:
        monkeypatch.setenv("WEB_ACCESS_LOG", setting)
    conf = importlib.reload(gunicorn_conf)
    cfg = Config()
    for name in ("accesslog", "logconfig_dict", "logger_class", "access_log_format"):
        cfg.set(name, getattr(conf, name))
    try:
        with _loggers_restored():
            logger = cfg.logger_class(cfg)
            built = []
            monkeypatch.setattr(logger, "atoms", lambda *a: built.append(a) or {})
            logger.access(None, None, {}, None)
            assert bool(built) is written
    finally:
        importlib.reload(gunicorn_conf)


@contextlib.contextmanager
def _loggers_restored():
    """gunicorn's dictConfig replaces the handlers and levels of the root logger and its own:
    put them back for the tests that run after."""
    names = [None, "gunicorn.error", "gunicorn.access"]
    saved = [(logging.getLogger(n), logging.getLogger(n).handlers[:], logging.getLogger(n).level,
              logging.getLogger(n).propagate) for n in names]
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def test_task_headers_carry_the_correlation_id():
    from types import SimpleNamespace

    from workers import observability

    headers = {}
    token = correlation_id.set("abcd")
    observability._add_correlation_header(headers=headers)
    correlation_id.reset(token)
    assert headers == {"lpr_cid": "abcd"}
    observability._add_correlation_header(headers=(empty := {}))
    assert empty == {}
    assert observability.cid_of(SimpleNamespace(lpr_cid="x1")) == "x1"
    assert observability.cid_of(SimpleNamespace(headers={"lpr_cid": "x2"})) == "x2"
    assert observability.cid_of(SimpleNamespace(headers=None)) is None


def test_beat_writes_its_liveness(monkeypatch):
    from workers.beat import LivenessScheduler

    store = fakeredis.FakeRedis(decode_responses=True)
    scheduler = LivenessScheduler.__new__(LivenessScheduler)
    scheduler._alive_written, scheduler._redis, scheduler._key = 0.0, store, "lpr:beat:alive"
    scheduler.write_alive(1000.0)
    scheduler.write_alive(1002.0)  # within 5 s: not written again
    assert store.get("lpr:beat:alive") == "1000.000"
    scheduler.write_alive(1006.0)
    assert store.get("lpr:beat:alive") == "1006.000"


def test_readyz_shows_beats_own_liveness():
    """Up or down on /readyz; its age at /admin/health (issue 15 item 3: no details in public)."""
    admin = "ops-admin-token-for-the-tests-0123456789"
    store = fakeredis.FakeRedis(decode_responses=True)
    client = create_app(make_settings(ADMIN_TOKEN=admin), redis_client=store, queue=RecordingQueue()).test_client()
    store.set("lpr:beat:alive", f"{time.time() - 2:.3f}")
    assert client.get("/readyz").get_json()["beat"] == "up"
    beat = client.get("/admin/health", headers={"Authorization": f"Bearer {admin}"}).get_json()["beat"]
    assert beat["alive_at"]["stale"] is False and beat["alive_at"]["age_seconds"] < 10
    store.set("lpr:beat:alive", f"{time.time() - 600:.3f}")
    assert client.get("/readyz").get_json()["beat"] == "down"
    stale = client.get("/admin/health", headers={"Authorization": f"Bearer {admin}"}).get_json()["beat"]
    assert stale["alive_at"]["stale"] is True


def test_the_due_set_gauges_add_up_every_shard():
    """With DUE_SET_SHARDS > 1 the due set is several key sets: counts are summed and the oldest
    entry is the oldest of all shards (stores 7 and 8 fall on different shards of 4)."""
    from service.state.due_set import DueEntry, DueSet

    store = fakeredis.FakeRedis(decode_responses=True)
    now = 1_800_000_000.0
    due = DueSet(store, "lpr:", shards=4)
    assert due.shard_of(7) != due.shard_of(8)
    due.schedule([(now - 10, DueEntry.for_reminder(7, 1, 7, "a" * 32)),
                  (now - 90, DueEntry.for_reminder(8, 1, 7, "b" * 32)),
                  (now + 600, DueEntry.for_reminder(8, 2, 7, "c" * 32))])
    collector = RedisStateCollector(store, make_settings(DUE_SET_SHARDS="4"), clock=lambda: now)
    got = {s.name: s.value for family in collector.collect() for s in family.samples if not s.labels}
    assert got["lpr_due_scheduled"] == 3 and got["lpr_due_now"] == 2 and got["lpr_due_processing"] == 0
    assert got["lpr_due_oldest_age_seconds"] == pytest.approx(90)  # store 8's, in the other shard
