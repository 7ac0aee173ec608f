"""What a delivery costs in Redis round trips: bench/workers.py measures deliveries against a
bare task that only POSTs, and on a busy machine each round trip to Redis is most of the gap."""
from __future__ import annotations

import fakeredis
import requests

from tests.conftest import make_settings
from tests.unit.test_channels_and_delivery import REMINDER, RID
from workers.delivery import deliver, queue_reminder
from service.ops.runtime import build_runtime



class Recording(fakeredis.FakeRedis):
    """Keeps each round trip's commands: a command sent alone, or a pipeline's (one trip)."""
    trips: list[list[tuple]] = []

    def execute_command(self, *args, **options):
        Recording.trips.append([args])
        return super().execute_command(*args, **options)

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def recorded(*args, **kwargs):
            Recording.trips.append([command for command, _ in pipe.command_stack])
            return execute(*args, **kwargs)
        pipe.execute = recorded
        return pipe


class Sender:
    name = "webhook"  # its receiver reports no status later (unlike WhatsApp and SMS)

    def send(self, reminder):
        return None


def test_a_delivery_saves_three_round_trips():
    """Issue 18, goal 2 (deliveries at >= 0.8 x a bare task that POSTs the same signed body): a
    reminder sent by one channel took 13 round trips to Redis (10 on the branch that cut them;
    what other work adds, such as the store's weekly figures, comes on top): the store's state and
    settings are read in one trip, a reminder this attempt marked sent is not marked again, and
    the state is not read again after settling where no late failure can come (no channel whose
    provider reports statuses later)."""
    store = Recording(decode_responses=True)
    rt = build_runtime(make_settings(), store, requests.Session(), clock=lambda: 1_800_000_000.0)
    rt.channels = [Sender()]
    other = {**REMINDER, "reminder_id": "0" * 32, "customer_id": 3}
    for reminder in (other, REMINDER):
        queue_reminder(rt, reminder, 86400, rt.clock(), lambda *a: None)
    # A warm worker: a script's first call loads it (EVALSHA, SCRIPT LOAD, EVALSHA).
    assert deliver(rt, 1, 3, other["reminder_id"], rt.clock()) == "sent"
    Recording.trips = []
    assert deliver(rt, 1, 2, RID, rt.clock()) == "sent"
    trips = Recording.trips
    k = rt.keys.store(1)
    assert [trip for trip in trips if ("HGET", k.state, "state") in trip] == \
        [[("HGET", k.state, "state"), ("HGETALL", k.config)]]  # one trip for both
    mark_sent = rt.ledger._mark_sent.sha
    assert sum(command[:2] == ("EVALSHA", mark_sent) for trip in trips for command in trip) == 1
    settle = next(n for n, trip in enumerate(trips) if trip[0][:2] == ("EVALSHA", rt.ledger._settle.sha))
    assert not [trip for trip in trips[settle:] if trip[0][0] == "HGET"]  # no state re-read
    assert rt.ledger.get(1, RID).state == "sent" and rt.ledger.marks(1, 2).sent == {"a": 7}
