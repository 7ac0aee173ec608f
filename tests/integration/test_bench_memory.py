"""bench/memory.py loads customers through the real code, reports every kind of key, cleans up."""
import importlib.util
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration


def test_memory_bench_reports_per_customer_and_leaves_nothing(redis_url, capsys):
    spec = importlib.util.spec_from_file_location("bench_memory", Path("bench/memory.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    client = redis.Redis.from_url(redis_url)
    before = client.dbsize()
    assert bench.main(["--customers", "20", "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out
    for kind in ("ledger", "lots", "marks", "profile", "due set", "intake inbox", "intake seen"):
        assert f"\n{kind} " in out, out
    assert "B per customer" in out and "INFO used_memory delta" in out
    assert client.dbsize() == before  # its own prefix, deleted at the end
