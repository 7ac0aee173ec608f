"""The shared budget and per-store queue (Lua scripts) on fakeredis."""
import fakeredis
import pytest

from service.state.budget import Budget, Limits, logged_window

M = 42
LIMITS = Limits(plan_limit=120, plan_window=60, customer_limit=5, customer_window=10)
W = logged_window(LIMITS.customer_window)  # 11 s: Salla's 10 and the log's margin


@pytest.fixture
def budget():
    return Budget(fakeredis.FakeRedis(decode_responses=True), "t:")


def test_fifty_events_for_one_customer_are_one_read(budget):
    added = [budget.enqueue(M, 7, 100.0) for _ in range(50)]
    assert added.count(True) == 1
    d = budget.dispatch(M, LIMITS, 100.0)
    assert d.customers == [(7, 1)] and d.wait is None
    assert budget.dispatch(M, LIMITS, 100.5).customers == []


def test_an_event_during_a_read_causes_exactly_one_more_read_after_it(budget):
    budget.enqueue(M, 7, 100.0)
    assert budget.dispatch(M, LIMITS, 100.0).customers == [(7, 1)]  # read in flight
    for _ in range(10):
        budget.enqueue(M, 7, 101.0)  # events arrive mid-read
    d = budget.dispatch(M, LIMITS, 101.0)
    assert d.customers == [] and d.wait == 1  # waits for the read in flight
    budget.done(M, 7, pages=1)
    assert budget.dispatch(M, LIMITS, 102.0).customers == [(7, 1)]
    budget.done(M, 7, pages=1)
    assert budget.dispatch(M, LIMITS, 103.0).customers == []


def test_never_more_than_the_limit_in_any_window(budget):
    for customer in range(12):
        budget.enqueue(M, customer, 0.0)
    first = budget.dispatch(M, LIMITS, 0.0)
    assert len(first.customers) == 5 and first.wait == pytest.approx(W)
    assert budget.dispatch(M, LIMITS, W - 0.1).customers == []
    assert len(budget.dispatch(M, LIMITS, W).customers) == 5
    last = budget.dispatch(M, LIMITS, 2 * W)
    assert len(last.customers) == 2 and last.wait is None


def test_multi_page_customers_pay_for_their_pages(budget):
    budget.retry_later(M, 1, 0.0, pages=4)
    budget.enqueue(M, 2, 0.0)
    d = budget.dispatch(M, LIMITS, 0.0)
    assert d.customers == [(1, 4), (2, 1)]
    assert not budget.acquire(M, LIMITS, 0.0, 1)


def test_acquire_takes_slots_only_when_there_are_enough(budget):
    assert budget.acquire(M, LIMITS, 0.0, 3)
    assert not budget.acquire(M, LIMITS, 0.0, 3)
    assert budget.acquire(M, LIMITS, 0.0, 2, tag="y")  # a tag of its own: the same instant, other slots
    assert not budget.acquire(M, LIMITS, 10.0, 1)  # Salla's window is over, the log's margin not
    assert budget.acquire(M, LIMITS, W, 5)


def test_salla_retry_after_blocks_the_store(budget):
    budget.enqueue(M, 1, 0.0)
    budget.observe(M, {"Retry-After": "30"}, now=0.0)
    d = budget.dispatch(M, LIMITS, 1.0)
    assert d.customers == [] and d.wait == pytest.approx(29.0)
    assert not budget.acquire(M, LIMITS, 1.0)
    assert budget.dispatch(M, LIMITS, 30.0).customers == [(1, 1)]


def test_salla_remaining_zero_blocks_until_reset(budget):
    budget.observe(M, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "50"}, now=10.0)
    assert not budget.acquire(M, LIMITS, 20.0)
    assert budget.acquire(M, LIMITS, 50.0)
    budget.observe(M, {"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "500"}, now=60.0)
    assert budget.acquire(M, LIMITS, 60.0)


def test_stores_have_separate_budgets(budget):
    for customer in range(6):
        budget.enqueue(1, customer, 0.0)
        budget.enqueue(2, customer, 0.0)
    assert len(budget.dispatch(1, LIMITS, 0.0).customers) == 5
    assert len(budget.dispatch(2, LIMITS, 0.0).customers) == 5
    assert budget.backlog() == [1, 2]


def test_not_before_delays_a_retry(budget):
    budget.retry_later(M, 1, 50.0)
    d = budget.dispatch(M, LIMITS, 10.0)
    assert d.customers == [] and d.wait == pytest.approx(40.0)


def test_drop_store_counts_what_was_waiting(budget):
    for customer in range(3):
        budget.enqueue(M, customer, 0.0)
    assert budget.drop_store(M) == 3
    assert budget.dispatch(M, LIMITS, 0.0).wait is None


def test_a_customer_needing_more_than_a_window_is_capped_and_never_stalls_the_store(budget):
    budget.retry_later(M, 1, 0.0, pages=50)  # more pages than the limit of 5
    budget.enqueue(M, 2, 0.0)
    assert budget.dispatch(M, LIMITS, 0.0).customers == [(1, 5)]
    d = budget.dispatch(M, LIMITS, 1.0)
    assert d.customers == [] and d.wait == pytest.approx(W - 1)  # not 0: no busy loop
    assert budget.dispatch(M, LIMITS, W).customers == [(2, 1)]


def test_the_wait_is_for_the_slots_the_next_customer_needs(budget):
    budget.enqueue(M, 1, 0.0)
    assert budget.dispatch(M, LIMITS, 0.0).customers == [(1, 1)]
    budget.retry_later(M, 2, 1.0, pages=5)
    d = budget.dispatch(M, LIMITS, 2.0)  # 4 slots free, 5 needed: wait for the first to leave
    assert d.customers == [] and d.wait == pytest.approx(W - 2)


def test_one_pump_at_a_time_unless_a_sooner_one_is_needed(budget):
    assert budget.claim_pump(M, 130.0, 35)
    assert not budget.claim_pump(M, 130.0, 35)
    assert not budget.claim_pump(M, 129.8, 35)  # not sooner by enough to matter
    assert budget.claim_pump(M, 101.0, 6)  # a read waits a second: not behind the 30 s pump
    budget.pump_started(M)
    assert budget.claim_pump(M, 140.0, 35)


def salla_refusals(jitter: float = 0.15, stalled: float = 0.0, stall: float = 0.0, stamped: bool = True,
                   seconds: float = 30.0, seed: int = 7) -> int:
    """Reads dispatched as fast as the budget allows, each going to Salla a little after its
    dispatch logged it (the queue, a worker's pickup: 0 to `jitter` seconds; a `stalled` share
    of them `stall` seconds more: a busy machine, a worker restarting), stamped when they go
    (Budget.stamp) unless `stamped` is False, and reaching Salla up to 20 ms after. Salla is the
    sandbox's limiter (devkit/sandbox.py: Salla's fixed windows as documented). Its refusals."""
    import heapq
    import random

    from devkit.sandbox import StoreSpec, _Limiter

    budget = Budget(fakeredis.FakeRedis(decode_responses=True), "t:")
    limits = Limits(plan_limit=100, plan_window=2, customer_limit=500, customer_window=10)
    salla = _Limiter(StoreSpec(M, "token", limits=True, plan_per_minute=100, plan_window_seconds=2,
                               customer_limit=500, customer_window_seconds=10))
    rng = random.Random(seed)
    for customer in range(5000):
        budget.enqueue(M, customer, 0.0)
    now, going, arrivals = 1000.0, [], []
    while now < 1000.0 + seconds:
        while going and going[0][0] <= now:
            at, customer, lease = heapq.heappop(going)
            if stamped and not budget.stamp(M, customer, lease, limits, at):
                budget.enqueue(M, customer, at)  # not sent: back in line (workers/sync.py: BudgetExhausted)
                continue
            arrivals.append(at + rng.uniform(0.0, 0.02))
        for read in budget.dispatch(M, limits, now).reads:
            delay = rng.uniform(0.0, jitter) + (stall if rng.random() < stalled else 0.0)
            heapq.heappush(going, (now + delay, read.customer_id, read.lease))
            budget.done(M, read.customer_id, pages=1, lease=read.lease)
        now += 0.01
    return sum(not salla.take(at)[0] for at in sorted(arrivals))


def test_a_read_that_reaches_salla_a_little_after_its_dispatch_still_fits_salla_windows():
    """A read is logged when it is dispatched and reaches Salla up to ~0.15 s later. Salla's
    windows are fixed, starting with a request: with the log's window exactly Salla's, the first
    request of a Salla window could arrive late and the request one window after it early, both
    counted in the same Salla window: 429. The log keeps each request a margin longer than Salla's
    window (`logged_window`), so a read waits until the jitter cannot put it in the previous one."""
    assert salla_refusals(stamped=False) == 0
    assert salla_refusals(seed=8, jitter=0.1, stamped=False) == 0


def test_a_read_held_up_for_seconds_is_logged_when_it_goes_not_when_it_was_dispatched():
    """A read held up for seconds between its dispatch and its request (a loaded machine, a
    worker restarting; 1 of 1,001 reads refused in fresh-clone runs of
    tests/integration/test_backfill.py under `make test`) would meet the next window's reads at
    Salla: no margin covers that. Each paid page moves one of its read's slots to the moment it
    goes (Budget.stamp), so the log counts it there."""
    assert salla_refusals(stalled=0.03, stall=2.0, stamped=False) > 0  # what happened before
    assert salla_refusals(stalled=0.03, stall=2.0) == 0
    assert salla_refusals(stalled=0.1, stall=4.0, seed=9) == 0


def test_stamping_moves_one_of_the_reads_own_slots_and_takes_one_again_only_where_there_is_room():
    """Budget.stamp: the read's own slot moves to when its page goes, no other read's; a read
    held up past the window takes a slot again if the window has room, and is refused if not."""
    budget = Budget(fakeredis.FakeRedis(decode_responses=True), "t:")
    for customer in (1, 2):
        budget.enqueue(M, customer, 0.0)
    one, two = budget.dispatch(M, LIMITS, 100.0).reads
    k = budget.keys.store(M)
    assert budget.stamp(M, one.customer_id, one.lease, LIMITS, 101.5)
    for key in (k.budget_plan, k.budget_customer):
        assert sorted(budget.redis.zrange(key, 0, -1, withscores=True), key=lambda m: m[1]) == [
            (f"100.000000:{two.customer_id}@{two.lease}:d1", 100.0),
            (f"101.500000:{one.customer_id}@{one.lease}:s1", 101.5)]
    assert budget.stamp(M, 1, None, LIMITS, 102.0)  # no lease: nothing was dispatched to stamp
    # held up past the customer window (11 s with the margin): its slot is gone; room: taken again
    assert budget.stamp(M, two.customer_id, two.lease, LIMITS, 112.0)
    assert budget.redis.zcard(k.budget_customer) == 2
    # the window full (5 of 5): a read whose slot left it may not go
    for customer in range(10, 13):
        budget.enqueue(M, customer, 112.0)
    assert len(budget.dispatch(M, LIMITS, 112.0).reads) == 3  # with one's (101.5) and two's (112): 5
    assert not budget.stamp(M, one.customer_id, "100.5-a-lease-whose-slot-left", LIMITS, 112.2)
    assert budget.redis.zcard(k.budget_customer) == 5
