"""The run's last reads of a backfill, on fakeredis (workers/backfill.py read_done)."""
import fakeredis
import requests

from service.ops import backfill as backfill_runs
from service.ops.runtime import build_runtime
from tests.conftest import make_settings
from workers import backfill


def test_two_last_reads_ending_together_are_both_counted(monkeypatch):
    """A fresh-clone run read 89 of 90: the run's last two reads end together; B leaves
    `reading`, then A's read ends the run (which deletes `seen`) before B asks whether it was
    the run's; B must still count as read, not as a resync's."""
    store = fakeredis.FakeRedis(decode_responses=True)
    rt = build_runtime(make_settings(), store, requests.Session(), clock=lambda: 1_790_000_000.0)
    backfill_runs.start(rt.store, rt.keys, 7, rt.clock(), "app.store.authorize")
    k = rt.keys.store(7)
    rt.store.sadd(k.backfill_seen, "100", "101")
    rt.store.sadd(k.backfill_reading, "100", "101")
    rt.store.hset(k.backfill, "listing_done", 1)
    real_pipeline = rt.store.pipeline

    def pipeline(*args, **kwargs):  # B's first pipeline: then A's read_done runs, as on another worker
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute

        def then_a():
            result = execute()
            if not then_a.ran and not rt.store.sismember(k.backfill_reading, "101"):
                then_a.ran = True
                monkeypatch.setattr(rt.store, "pipeline", real_pipeline)
                backfill.read_done(rt, 7, 100, "read", 0)
            return result
        then_a.ran = False
        pipe.execute = then_a
        return pipe

    monkeypatch.setattr(rt.store, "pipeline", pipeline)
    backfill.read_done(rt, 7, 101, "read", 0)
    progress = backfill_runs.progress(rt.store, rt.keys, rt.settings, {}, 7)
    assert progress["state"] == "done" and progress["customers_read"] == 2
