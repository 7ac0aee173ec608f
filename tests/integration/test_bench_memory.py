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
    for kind in ("ledger", "profile+lots", "marks", "due set", "intake inbox", "intake seen"):
        assert f"\n{kind} " in out, out
    assert "B per customer" in out and "INFO used_memory delta" in out
    assert client.dbsize() == before  # its own prefix, deleted at the end


@pytest.fixture
def scenario(redis_url):
    """bench/memory.py's scenario for 3 customers under a prefix of its own; deleted after."""
    spec = importlib.util.spec_from_file_location("bench_memory", Path("bench/memory.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = bench.free_prefix(client)
    rt = bench.build_runtime(bench.settings_for(redis_url, prefix), client, bench.requests.Session())
    try:
        bench.load(rt, 3, 3)
        yield client, prefix
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


def test_a_sent_reminders_record_and_the_marks_are_listpacks(scenario):
    """Issue 18 goal 1: small hashes that Redis keeps as listpacks (at its default
    hash-max-listpack-value, 64 bytes): a sent reminder's record and the customer's marks."""
    client, prefix = scenario
    records = list(client.scan_iter(match=prefix + "*:reminder:*"))
    marks = list(client.scan_iter(match=prefix + "*:marks:*"))
    assert len(records) in (3, 6) and len(marks) == 3  # two reminders each, or one naming both stages
    for key in records + marks:
        assert client.object("encoding", key) == "listpack", key
    assert all("body" not in client.hkeys(key) for key in records)


def test_the_profile_is_a_listpack_with_one_time_and_the_lots_hold_no_date_text(scenario):
    """Issue 18 goal 1 (memory2): in the benchmark's scenario a profile keeps one event time
    (`t`), not one per field, and stays a listpack; the lots' row holds no ISO date. They are
    kept in the profile (service/state/last_read.py): no `lots:` key a customer."""
    client, prefix = scenario
    profiles = list(client.scan_iter(match=prefix + "*:customer:*"))
    assert len(profiles) == 3
    for key in profiles:
        assert client.object("encoding", key) == "listpack", key
        assert [f for f in client.hkeys(key) if f.startswith("t")] == ["t"], client.hgetall(key)
        lots = {name: value for name, value in client.hgetall(key).items() if name.startswith("L")}
        assert len(lots) == 2 + 3 and not [value for value in lots.values() if "T" in value], lots
    assert not list(client.scan_iter(match=prefix + "*:lots:*"))
