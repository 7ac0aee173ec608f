"""bench/workers.py reads task run times from the workers' own log lines, plain and JSON."""
from __future__ import annotations

import json

from bench.workers import percentile, task_seconds


def test_task_run_times_come_from_plain_and_json_succeeded_lines(tmp_path):
    log = tmp_path / "worker.log"
    plain = "[2026-12-02 16:27:55,031: INFO/ForkPoolWorker-1] Task bare.get[b57003a7-0a3b] succeeded in 0.0554s: 200"
    ours = json.dumps({"level": "INFO", "logger": "celery.app.trace", "msg": "Task workers.tasks.sync_customer"
                       "[649747db-0c30] succeeded in 0.0852317s: 'read'"})
    other = json.dumps({"msg": "Task workers.tasks.pump_store[1] succeeded in 0.001s: None"})
    tiny = "[2026-12-02 17:23:43,760: INFO/ForkPoolWorker-8] Task bare.get[7] succeeded in 9.8e-05s: None"
    log.write_text("\n".join([plain, ours, other, tiny, "not a task line"]) + "\n")
    assert task_seconds(log, "bare.get") == [0.0554, 9.8e-05]
    assert task_seconds(log, "workers.tasks.sync_customer") == [0.0852317]


def test_percentiles():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([], 0.5) != percentile([], 0.5)  # nan: no task line found
