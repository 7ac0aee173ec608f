"""The due set in shards (DUE_SET_SHARDS): routing by store, a fair claim, moving entries when
the number of shards changes. fakeredis runs the real Lua scripts (lupa)."""
from __future__ import annotations

import json

import fakeredis
import pytest
from hypothesis import given, strategies as st

from service.cli import main as cli
from service.state.keys import Keys
from tests.conftest import TOKEN_KEY
from service.state.due_set import DueEntry, DueSet, shard_of, split_quota

LEASE = 10.0


def entry(merchant: int, customer: int = 1, stage: int = 7) -> DueEntry:
    return DueEntry(merchant, customer, stage, "ab" * 6)


@pytest.fixture(params=[True, False], ids=["decoded", "bytes"])
def client(request):
    return fakeredis.FakeRedis(decode_responses=request.param)


def where(client, due: DueSet, which: int = 0) -> dict[int, set[DueEntry]]:
    """Per shard: the entries in one of its sets (0 scheduled, 1 processing, 2 index)."""
    found = {}
    for shard in range(due.shards):
        entries = {DueEntry.decode(m) for m in client.zrange(due.shard_keys(shard)[which], 0, -1)}
        if entries:
            found[shard] = entries
    return found


# --- the pure parts -------------------------------------------------------------------------

@given(st.integers(min_value=1, max_value=5000), st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=63))
def test_split_quota_hands_out_exactly_the_limit_as_evenly_as_possible(limit, shards, start):
    quotas = split_quota(limit, list(range(shards)), start)
    assert sum(quotas.values()) == limit
    assert all(q > 0 for q in quotas.values())
    assert max(quotas.values()) - min(quotas.get(s, 0) for s in range(shards)) <= 1


def test_with_fewer_claims_than_shards_every_shard_gets_its_turn(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=8)
    due.schedule([(100, entry(m, c)) for m in range(8) for c in range(10)])  # every shard busy
    turns = [{due.shard_of(e.merchant_id) for e in due.claim(100, 3)} for _ in range(3)]
    assert all(len(claimed) == 3 for claimed in turns)  # one entry from each of three shards
    assert set().union(*turns) == set(range(8))  # and the next call starts where this one ended


def test_shard_of_is_the_merchant_id_modulo_the_shards():
    assert [shard_of(m, 4) for m in (0, 1, 2, 3, 4, 1305146709)] == [0, 1, 2, 3, 0, 1305146709 % 4]
    assert shard_of(1305146709, 1) == 0


def test_shard_zero_keeps_the_unsharded_key_names():
    keys = Keys("lpr:")
    assert keys.due_base == keys.due_shard_base(0) == "lpr:{due}"
    assert keys.due_shard_base(7) == "lpr:{due:7}"
    with pytest.raises(ValueError):
        keys.due_shard_base(-1)
    assert DueSet(fakeredis.FakeRedis(), "lpr:").keys == (
        "lpr:{due}:scheduled", "lpr:{due}:processing", "lpr:{due}:by-customer")


@pytest.mark.parametrize("shards", [0, 1025, True, 2.0, "4"])
def test_bad_shard_counts_are_refused(shards):
    with pytest.raises(ValueError, match="shards"):
        DueSet(fakeredis.FakeRedis(), "t:", shards=shards)
    with pytest.raises(ValueError, match="from_shards"):
        DueSet(fakeredis.FakeRedis(), "t:", shards=2).reshard(shards)


# --- routing ------------------------------------------------------------------------------------

def test_each_store_s_entries_go_to_its_shard_and_every_call_routes_there(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=4)
    entries = [entry(m, c) for m in (8, 9, 10, 11, 13) for c in (1, 2)]
    assert due.schedule([(100, e) for e in entries]) == 10
    assert where(client, due) == {0: {entry(8, 1), entry(8, 2)}, 1: {entry(9, 1), entry(9, 2), entry(13, 1), entry(13, 2)},
                                  2: {entry(10, 1), entry(10, 2)}, 3: {entry(11, 1), entry(11, 2)}}
    assert where(client, due, 2) == where(client, due)
    claimed = due.claim(100, 100)
    assert sorted(claimed, key=repr) == sorted(entries, key=repr)
    assert where(client, due, 1) == where(client, due, 2) and due.pending_count() == 0
    assert due.ack(claimed[:3] + claimed[:1]) == 3  # several shards in one call, a repeat counted once
    due.remove(claimed[3:6])
    assert due.processing_count() == 4
    assert sum(len(v) for v in where(client, due, 2).values()) == 4


def test_next_due_and_counts_cover_every_shard(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=4)
    assert due.next_due() is None
    due.schedule([(300, entry(8)), (200, entry(9)), (250, entry(10))])
    assert due.next_due() == 200
    due.claim(200, 10)
    assert due.next_due() == 250
    assert (due.pending_count(), due.processing_count()) == (2, 1)
    assert [(c["shard"], c["pending"], c["processing"]) for c in due.counts()] == [(0, 1, 0), (1, 0, 1), (2, 1, 0), (3, 0, 0)]


# --- a fair claim -------------------------------------------------------------------------------

def test_one_busy_shard_never_starves_the_others(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=4)
    busy = [(100 + c / 1000, entry(1, c)) for c in range(500)]  # shard 1, and all due earlier
    quiet = [(150, entry(m, c)) for m in (4, 6, 7) for c in range(5)]  # shards 0, 2, 3
    due.schedule(busy + quiet)
    first = due.claim(200, 20)
    assert len(first) == 20
    assert {due.shard_of(e.merchant_id) for e in first} == {0, 1, 2, 3}
    assert sum(1 for e in first if e.merchant_id == 1) == 5  # a quarter each
    # What the quiet shards cannot fill goes to the busy one, in the same call.
    second = due.claim(200, 40)
    assert len(second) == 40 and all(e.merchant_id == 1 for e in second)
    assert due.pending_count() == 500 + 15 - 60


def test_a_claim_merges_its_shards_earliest_first(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=3)
    due.schedule([(130, entry(3)), (110, entry(4)), (120, entry(5)), (100, entry(6, 2))])
    assert [e.merchant_id for e in due.claim(200, 10)] == [6, 4, 5, 3]


def test_expired_leases_come_back_from_every_shard(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=4)
    due.schedule([(100, entry(m)) for m in range(8)])
    assert len(due.claim(100, 8)) == 8  # every claimer dies
    assert due.requeue_expired(100 + LEASE, limit=5) == 5
    assert due.requeue_expired(100 + LEASE, limit=5) == 3
    assert sorted(e.merchant_id for e in due.claim(100 + LEASE, 8)) == list(range(8))


def test_a_sweep_drains_every_shard(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, shards=5)
    entries = [entry(m, c) for m in range(1, 12) for c in range(7)]
    due.schedule([(100, e) for e in entries])
    seen = []
    while batch := due.claim(100, 4):  # the sweep stops at the first empty claim
        seen += batch
        due.ack(batch)
    assert sorted(seen, key=repr) == sorted(entries, key=repr)
    assert all(client.zcard(key) == 0 for key in due.keys)


# --- erasure --------------------------------------------------------------------------------------

def test_cancel_customer_and_store_drop_scheduled_and_leased_entries_in_their_shard(client):
    due = DueSet(client, "t:", lease_seconds=LEASE, batch=2, shards=4)
    due.schedule([(100, entry(5, c, s)) for c in (1, 2) for s in (30, 7, 1)] + [(100, entry(6, 1))])
    due.claim(100, 3)
    assert due.cancel_customer(5, 1) == 3
    assert due.cancel_store(5) == 3
    assert where(client, due, 2) == {2: {entry(6, 1)}}


def test_an_uninstall_finds_entries_left_in_another_shard_before_a_reshard(client):
    DueSet(client, "t:", shards=2).schedule([(100, entry(5, c)) for c in range(3)])  # shard 1 of 2
    due = DueSet(client, "t:", batch=2, shards=4)  # store 5 belongs in shard 1 of 4 as well...
    DueSet(client, "t:", shards=3).schedule([(100, entry(5, 9))])  # ...but this one is in shard 2
    assert due.cancel_store(5) == 4
    assert due.pending_count() == 0


# --- changing the number of shards -----------------------------------------------------------------

@pytest.mark.parametrize("old, new", [(1, 4), (4, 1), (4, 3), (2, 8)])
def test_reshard_moves_every_entry_to_its_new_shard_with_its_times(client, old, new):
    before = DueSet(client, "t:", lease_seconds=LEASE, batch=3, shards=old)
    entries = [entry(m, c) for m in range(1, 10) for c in range(3)]
    before.schedule([(100 + i, e) for i, e in enumerate(entries)])
    leased = before.claim(105, 4)
    times = {DueEntry.decode(m): s for shard in range(old) for m, s in
             client.zrange(before.shard_keys(shard)[0], 0, -1, withscores=True)}
    after = DueSet(client, "t:", lease_seconds=LEASE, batch=3, shards=new)
    report = after.reshard(old)
    assert report["moved"] == sum(1 for e in entries if shard_of(e.merchant_id, old) != shard_of(e.merchant_id, new))
    for which in (0, 1, 2):
        for shard, found in where(client, after, which).items():
            assert all(after.shard_of(e.merchant_id) == shard for e in found)
    for shard in range(new, old):  # shards beyond the new count are empty
        assert all(client.zcard(key) == 0 for key in after.shard_keys(shard))
    assert {DueEntry.decode(m): s for shard in range(new) for m, s in
            client.zrange(after.shard_keys(shard)[0], 0, -1, withscores=True)} == times
    assert after.processing_count() == 4 and after.ack(leased) == 4  # the leases moved too
    assert sum(c["pending"] for c in report["shards"]) == len(entries) - 4
    assert after.reshard(old)["moved"] == 0  # a second run finds nothing out of place
    drained = after.claim(1000, 1000)
    assert sorted(drained + leased, key=repr) == sorted(entries, key=repr)


def test_reshard_keeps_the_earlier_time_of_an_entry_scheduled_again_meanwhile(client):
    DueSet(client, "t:", shards=1).schedule([(300, entry(5))])
    after = DueSet(client, "t:", shards=4)
    after.schedule([(200, entry(5))])  # the new layout already put it in shard 1
    after.reshard(1)
    assert after.pending_count() == 1 and after.next_due() == 200


# --- the operator's commands ---------------------------------------------------------------------

@pytest.fixture
def operator(monkeypatch):
    store = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr("service.cli.connect", lambda settings: store)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    return store


def test_cli_reshard_and_due_set(operator, monkeypatch, capsys):
    DueSet(operator, "lpr:", shards=1).schedule([(100, entry(m)) for m in range(6)])
    monkeypatch.setenv("DUE_SET_SHARDS", "3")
    assert cli(["--json", "reshard-due-set", "--from", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["from"], report["to"], report["moved"]) == (1, 3, 4)
    assert cli(["--json", "due-set"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["shards"] == 3 and view["pending"] == 6
    assert [s["pending"] for s in view["by_shard"]] == [2, 2, 2]


@pytest.mark.parametrize("argv", [["reshard-due-set", "--from", "0"], ["reshard-due-set", "--from", "2000"]])
def test_cli_reshard_refuses_a_bad_old_count(operator, capsys, argv):
    assert cli(argv) == 2
    assert "--from" in capsys.readouterr().err


def test_cli_reshard_needs_the_old_count(operator, capsys):
    with pytest.raises(SystemExit):
        cli(["--json", "reshard-due-set"])
    assert "--from" in capsys.readouterr().err


def test_a_customers_entries_are_found_in_the_stores_shard():
    """The PDPL export lists a customer's entries: they are in the store's shard, not shard 0."""
    import fakeredis

    from service.state.due_set import DueEntry, DueSet

    store = fakeredis.FakeRedis()
    due = DueSet(store, "x:", shards=4)
    merchant = 7  # shard 3
    assert due.shard_of(merchant) != 0
    due.schedule([(100.0, DueEntry.for_reminder(merchant, 5, 7, "a" * 32))])
    [found] = due.customer_entries(merchant, 5)
    assert found["stage_days"] == 7 and found["due_at"] == 100.0
    assert due.cancel_customer(merchant, 5) == 1 and due.customer_entries(merchant, 5) == []
