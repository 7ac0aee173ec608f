"""The due set on fakeredis. Its Lua scripts run for real: fakeredis evaluates them with lupa."""
from __future__ import annotations

import fakeredis
import lupa  # noqa: F401  (fakeredis runs EVAL with it: a missing dev dependency must fail, not skip)
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from service.state.due_set import REMINDER_KEY_HEX, DueEntry, DueSet, customer_prefix, lex_range

RID = "cc700ffe4cb0720126c625280ab43958"
LEASE = 10.0


def entry(merchant: int = 1305146709, customer: int = 1001, stage: int = 7, rid: str = RID) -> DueEntry:
    return DueEntry.for_reminder(merchant, customer, stage, rid)


@pytest.fixture(params=[True, False], ids=["decoded", "bytes"])
def client(request):
    return fakeredis.FakeRedis(decode_responses=request.param)


@pytest.fixture(params=[1, 4], ids=["1-shard", "4-shards"])
def shards(request) -> int:
    return request.param


@pytest.fixture
def due(client, shards) -> DueSet:
    return DueSet(client, "t:", lease_seconds=LEASE, shards=shards)


def members(client, key: str) -> dict[str, float]:
    return {m.decode() if isinstance(m, bytes) else m: s for m, s in client.zrange(key, 0, -1, withscores=True)}


def all_members(client, due: DueSet, which: int) -> dict[str, float]:
    """One of the three sets (0 scheduled, 1 processing, 2 index) over every shard."""
    found: dict[str, float] = {}
    for shard in range(due.shards):
        found.update(members(client, due.shard_keys(shard)[which]))
    return found


# --- the entry and its member -------------------------------------------------------------

ids = st.integers(min_value=0, max_value=2**63)
keys = st.text(alphabet="0123456789abcdef", min_size=REMINDER_KEY_HEX, max_size=REMINDER_KEY_HEX)


@given(ids, ids, st.integers(min_value=0, max_value=365), keys)
def test_encode_decode_round_trip(merchant, customer, stage, key):
    original = DueEntry(merchant, customer, stage, key)
    member = original.encode()
    assert member.isascii() and member.count(":") == 3
    assert DueEntry.decode(member) == original
    assert DueEntry.decode(member.encode("ascii")) == original


def test_members_of_real_ids_fit_the_32_byte_allocation():
    # Redis keeps each member as an sds string: 3 header bytes + text + NUL within 32 bytes.
    assert len(entry(merchant=1305146709, customer=2116149737, stage=30).encode()) <= 28


def test_for_reminder_keeps_a_prefix_of_the_id_and_matches_it():
    e = entry()
    assert e.reminder_key == RID[:REMINDER_KEY_HEX]
    assert e.matches(RID) and e.matches(RID.upper())
    assert not e.matches("0" * 32)


@pytest.mark.parametrize("member", ["", "a:b:c", "a:b:c:d:e", "A:b:c:d", "1:2:3:-4", "01:2:3:4", "1:2:3:" + "z" * 11,
                                    "1:2:3:4\u00e9", b"1:2:3:\xff"])
def test_decode_rejects_what_encode_never_writes(member):
    with pytest.raises(ValueError):
        DueEntry.decode(member)


@pytest.mark.parametrize("fields", [(-1, 1, 7, "a" * 12), (1, True, 7, "a" * 12), (1, 1, 7, "A" * 12),
                                    (1, 1, 7, "a" * 11), (1, 1, 7.0, "a" * 12)])
def test_entry_rejects_bad_fields(fields):
    with pytest.raises(ValueError):
        DueEntry(*fields)


def test_lex_range_of_a_customer_excludes_longer_ids():
    low, high = lex_range(customer_prefix(1, 1))
    inside = DueEntry(1, 1, 7, "a" * 12).encode()
    neighbours = [DueEntry(1, 37, 7, "a" * 12).encode(), DueEntry(37, 1, 7, "a" * 12).encode()]  # "11" in base 36
    assert low[1:] <= inside < high[1:]
    assert all(not (low[1:] <= other < high[1:]) for other in neighbours)


# --- the set --------------------------------------------------------------------------------

def test_keys_share_the_prefix_and_one_cluster_slot_per_shard(due):
    assert due.keys[:3] == ("t:{due}:scheduled", "t:{due}:processing", "t:{due}:by-customer")
    for shard in range(1, due.shards):
        assert all(key.startswith(f"t:{{due:{shard}}}:") for key in due.shard_keys(shard))
    assert len(set(due.keys)) == 3 * due.shards


def test_scheduling_the_same_entry_twice_keeps_one_with_the_new_time(due, client):
    assert due.schedule([(100, entry()), (50, entry(customer=2))]) == 2
    due.schedule([(120, entry())])
    assert due.pending_count() == 2
    assert all_members(client, due, 0)[entry().encode()] == 120
    assert len(all_members(client, due, 2)) == 2


def test_claim_hands_out_due_entries_earliest_first_once(due, client):
    due.schedule([(100 + i, entry(customer=i)) for i in range(5)])
    assert due.claim(now=99, limit=10) == []
    assert due.claim(now=103, limit=2) == [entry(customer=0), entry(customer=1)]
    assert due.claim(now=103, limit=10) == [entry(customer=2), entry(customer=3)]
    assert due.claim(now=103, limit=10) == []
    assert due.pending_count() == 1 and due.processing_count() == 4
    assert set(all_members(client, due, 1).values()) == {103 + LEASE}


def test_ack_forgets_entries_and_their_index(due, client):
    due.schedule([(100, entry(customer=1)), (100, entry(customer=2))])
    claimed = due.claim(now=100, limit=10)
    assert due.ack(claimed) == 2
    assert due.ack(claimed) == 0 and due.ack([]) == 0
    assert due.processing_count() == 0 and not all_members(client, due, 2)


def test_acking_an_entry_twice_in_one_call_counts_it_once(due):
    due.schedule([(100, entry())])
    claimed = due.claim(now=100, limit=1)
    assert due.ack(claimed * 2) == 1


def test_an_expired_lease_goes_back_and_is_claimed_again(due):
    due.schedule([(100, entry())])
    assert due.claim(now=100, limit=1) == [entry()]
    assert due.requeue_expired(now=100 + LEASE - 1) == 0
    assert due.claim(now=100 + LEASE - 1, limit=1) == []
    assert due.requeue_expired(now=100 + LEASE) == 1
    assert due.pending_count() == 1 and due.processing_count() == 0
    assert due.claim(now=100 + LEASE, limit=1) == [entry()]


def test_claim_requeues_expired_leases_itself(due):
    due.schedule([(100, entry())])
    due.claim(now=100, limit=1)  # the claimer dies without acking
    assert due.claim(now=100 + LEASE, limit=5) == [entry()]
    assert due.processing_count() == 1


def test_a_requeued_entry_keeps_an_earlier_schedule(due, client):
    due.schedule([(100, entry())])
    due.claim(now=100, limit=1)
    due.schedule([(105, entry())])  # scheduled again while leased
    due.requeue_expired(now=200)
    assert all_members(client, due, 0) == {entry().encode(): 105}


def test_ack_keeps_the_index_of_an_entry_scheduled_again_meanwhile(due):
    due.schedule([(100, entry())])
    claimed = due.claim(now=100, limit=1)
    due.schedule([(500, entry())])
    assert due.ack(claimed) == 1
    assert due.cancel_customer(entry().merchant_id, entry().customer_id) == 1
    assert due.pending_count() == 0


def test_cancel_customer_drops_scheduled_and_leased_entries_of_that_customer_only(due, client):
    mine = [entry(customer=1, stage=30), entry(customer=1, stage=7), entry(customer=1, stage=1)]
    others = [entry(customer=37), entry(customer=11), entry(merchant=37, customer=1)]
    due.schedule([(100, mine[0]), (200, mine[1]), (300, mine[2])] + [(400, other) for other in others])
    due.claim(now=100, limit=1)  # mine[0] is leased now
    assert due.cancel_customer(1305146709, 1) == 3
    assert due.cancel_customer(1305146709, 1) == 0
    assert due.processing_count() == 0
    remaining = {DueEntry.decode(m) for m in all_members(client, due, 0)}
    assert remaining == set(others)
    assert {DueEntry.decode(m) for m in all_members(client, due, 2)} == set(others)


def test_cancel_store_removes_every_entry_of_the_store_in_batches(client, shards):
    due = DueSet(client, "t:", lease_seconds=LEASE, batch=3, shards=shards)
    due.schedule([(100 + i, entry(merchant=1, customer=i)) for i in range(10)] + [(500, entry(merchant=38))])
    due.claim(now=101, limit=2)
    assert due.cancel_store(1) == 10
    assert due.pending_count() == 1 and due.processing_count() == 0
    assert [DueEntry.decode(m) for m in all_members(client, due, 2)] == [entry(merchant=38)]


@pytest.mark.parametrize("call", [lambda d: d.claim(0, 0), lambda d: d.requeue_expired(0, 0),
                                  lambda d: d.schedule([(float("inf"), entry())]),
                                  lambda d: d.schedule([(float("nan"), entry())])])
def test_bad_arguments_are_refused(due, call):
    with pytest.raises(ValueError):
        call(due)


def test_empty_schedule_sends_nothing(due):
    assert due.schedule([]) == 0


# --- property: a model of the set against the real scripts ----------------------------------

MERCHANTS = (1, 2, 37, 40)  # with 4 shards: shards 1, 2, 1 and 0
POOL = [DueEntry(m, c, s, k) for m in MERCHANTS for c in (1, 11) for s, k in ((7, "0" * 12), (1, "f" * 12))]
STATE_LEASE = 10


class DueSetMachine(RuleBasedStateMachine):
    """Random schedule/claim/ack/requeue/cancel sequences, with claimers that die (never ack).

    Checked: Redis equals a plain-Python model after every step; an entry is handed out at most
    once per scheduling (a lease that ran out counts as a new chance, it is a redelivery); and
    at the end every entry left scheduled or leased is claimed once time moves on.
    """

    @initialize(decoded=st.booleans(), shards=st.sampled_from([1, 4]))
    def start(self, decoded: bool, shards: int) -> None:
        self.client = fakeredis.FakeRedis(decode_responses=decoded)
        self.due = DueSet(self.client, "m:", lease_seconds=STATE_LEASE, batch=2, shards=shards)
        self.now = 1_000
        self.scheduled: dict[DueEntry, int] = {}
        self.leased: dict[DueEntry, int] = {}
        self.chances = {e: 0 for e in POOL}
        self.handed = {e: 0 for e in POOL}

    def _model_requeue(self, limit: int) -> int:
        expired = sorted((lease, e.encode().encode()) for e, lease in self.leased.items() if lease <= self.now)[:limit]
        for lease, member in expired:
            e = DueEntry.decode(member)
            del self.leased[e]
            if e not in self.scheduled:
                self.chances[e] += 1
            self.scheduled[e] = min(self.scheduled.get(e, lease), lease)
        return len(expired)

    @rule(e=st.sampled_from(POOL), delay=st.integers(min_value=-5, max_value=30))
    def schedule(self, e: DueEntry, delay: int) -> None:
        self.due.schedule([(self.now + delay, e)])
        if e not in self.scheduled:
            self.chances[e] += 1
        self.scheduled[e] = self.now + delay

    @rule(seconds=st.integers(min_value=0, max_value=25))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule(limit=st.integers(min_value=1, max_value=4))
    def claim(self, limit: int) -> None:
        if self.due.shards > 1:
            return self._claim_sharded(limit)
        claimed = self.due.claim(self.now, limit)
        self._model_requeue(limit)
        expected = sorted((at, e.encode().encode()) for e, at in self.scheduled.items() if at <= self.now)[:limit]
        assert claimed == [DueEntry.decode(member) for _, member in expected]
        self._hand_out(claimed)

    def _claim_sharded(self, limit: int) -> None:
        """Which entries a sharded claim takes depends on how `limit` was split, so the model
        checks what must hold whatever the split: only due or expired entries, as many as asked
        if there are that many, earliest first, and nothing else changed but expired leases
        going back; then it takes the new state from Redis."""
        candidates = {e for e, at in self.scheduled.items() if at <= self.now}
        candidates |= {e for e, lease in self.leased.items() if lease <= self.now}
        claimed = self.due.claim(self.now, limit)
        assert set(claimed) <= candidates and len(set(claimed)) == len(claimed)
        assert len(claimed) == min(limit, len(candidates))
        times = {**self.scheduled, **{e: min(lease, self.scheduled.get(e, lease))
                                      for e, lease in self.leased.items() if lease <= self.now}}
        assert [times[e] for e in claimed] == sorted(times[e] for e in claimed)
        read = lambda which: {DueEntry.decode(m): s for m, s in
                              (pair for shard in range(self.due.shards)
                               for pair in self.client.zrange(self.due.shard_keys(shard)[which], 0, -1, withscores=True))}
        scheduled, leased = read(0), read(1)
        for e, lease in self.leased.items():
            if e in claimed:
                continue
            if e in leased:
                assert leased[e] == lease
            else:  # its lease ran out and it went back
                assert lease <= self.now and scheduled[e] == times[e]
                if e not in self.scheduled:
                    self.chances[e] += 1
        for e in claimed:
            if e in self.leased and e not in self.scheduled:
                self.chances[e] += 1  # put back and claimed again in one call
        self.scheduled = {e: at for e, at in scheduled.items()}
        self.leased = {e: lease for e, lease in self.leased.items() if e in leased and e not in claimed}
        for e in claimed:
            assert leased[e] == self.now + STATE_LEASE
        self._hand_out(claimed)

    def _hand_out(self, claimed: list[DueEntry]) -> None:
        for e in claimed:
            self.scheduled.pop(e, None)
            self.leased[e] = self.now + STATE_LEASE
            self.handed[e] += 1
            assert self.handed[e] <= self.chances[e], f"{e} handed out more often than scheduled"

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def ack(self, data) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.leased, key=repr)), unique=True, max_size=3))
        assert self.due.ack(chosen) == len(chosen)
        for e in chosen:
            del self.leased[e]

    @rule(limit=st.integers(min_value=1, max_value=4))
    def requeue(self, limit: int) -> None:
        if self.due.shards > 1:  # which ones go back depends on the split; how many does not
            expired = sum(1 for lease in self.leased.values() if lease <= self.now)
            assert self.due.requeue_expired(self.now, limit) == min(limit, expired)
            self._resync_leases()
            return
        assert self.due.requeue_expired(self.now, limit) == self._model_requeue(limit)

    def _resync_leases(self) -> None:
        for e, lease in list(self.leased.items()):
            shard = self.due.shard_keys(self.due.shard_of(e.merchant_id))
            if self.client.zscore(shard[1], e.encode()) is None:
                del self.leased[e]
                if e not in self.scheduled:
                    self.chances[e] += 1
                self.scheduled[e] = min(self.scheduled.get(e, lease), lease)

    @rule(e=st.sampled_from(POOL))
    def cancel_customer(self, e: DueEntry) -> None:
        mine = {x for x in {*self.scheduled, *self.leased}
                if (x.merchant_id, x.customer_id) == (e.merchant_id, e.customer_id)}
        assert self.due.cancel_customer(e.merchant_id, e.customer_id) == len(mine)
        self._forget(mine)

    @rule(merchant=st.sampled_from(MERCHANTS))
    def cancel_store(self, merchant: int) -> None:
        mine = {x for x in {*self.scheduled, *self.leased} if x.merchant_id == merchant}
        assert self.due.cancel_store(merchant) == len(mine)
        self._forget(mine)

    def _forget(self, entries: set[DueEntry]) -> None:
        for e in entries:
            self.scheduled.pop(e, None)
            self.leased.pop(e, None)

    @invariant()
    def redis_matches_the_model(self) -> None:
        if not hasattr(self, "due"):
            return
        for shard in range(self.due.shards):
            mine = lambda model: {e: at for e, at in model.items() if self.due.shard_of(e.merchant_id) == shard}
            scheduled, processing, index = self.due.shard_keys(shard)
            read = lambda key: {DueEntry.decode(m): s for m, s in self.client.zrange(key, 0, -1, withscores=True)}
            assert read(scheduled) == mine(self.scheduled)
            assert read(processing) == mine(self.leased)
            assert set(read(index)) == {*mine(self.scheduled), *mine(self.leased)}

    def teardown(self) -> None:
        if not hasattr(self, "due"):
            return
        waiting = {*self.scheduled, *self.leased}
        self.now += 10 * STATE_LEASE + 100
        claimed: list[DueEntry] = []
        for _ in range(len(POOL) + 1):
            batch = self.due.claim(self.now, 2)
            self.due.ack(batch)
            claimed += batch
        assert sorted(claimed, key=repr) == sorted(waiting, key=repr)
        assert all(self.client.zcard(key) == 0 for key in self.due.keys)


TestDueSetMachine = DueSetMachine.TestCase
TestDueSetMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
