"""bench/burst.py watches the service's own keys: what the budget queues and holds in flight
(it once polled key names of an earlier layout, saw nothing, and ended every run at once)."""
from __future__ import annotations

import fakeredis

from bench.burst import Watcher
from service.state.budget import Budget, Limits

M = 710001


def test_the_watcher_sees_what_waits_and_what_is_in_flight():
    client = fakeredis.FakeRedis(decode_responses=True)
    budget = Budget(client, "bench:")
    watcher = Watcher(client, "bench:", [M])
    assert watcher.idle()
    for customer in (1, 2):
        budget.enqueue(M, customer, 0.0)
    assert watcher._pending() == {M: 2} and not watcher.idle()
    reads = budget.dispatch(M, Limits(100, 60, 10, 600), 0.0).reads
    assert len(reads) == 2 and watcher._pending() == {M: 0}
    assert not watcher.idle()  # both in flight
    for read in reads:
        budget.done(M, read.customer_id, lease=read.lease)
    assert watcher.idle()
