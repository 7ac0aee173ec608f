"""Accepted webhooks, kept in their store's inbox in Redis until a worker has handled them,
handed to the workers in batches.

Why Redis and not only the broker: a message handed to the broker can still be lost (with the
Redis broker, a worker killed between taking a message and recording it as unacknowledged
loses it; a broker restarted without its queues loses them all). Why batches: publishing a
Celery task per webhook was most of the web's time per request (bench/ingest.py); a burst of
a store's events needs one drain task, not one task each.

One script per webhook, on the store's keys (one cluster slot), two writes:
  seen:<digest>  the delivery's bytes were accepted (WEBHOOK_DEDUPE_TTL_SECONDS): repeats stop
  inbox          a sorted set of the events themselves (JSON members), each scored by the time
                 from which it may be taken (accepted, or the end of a drain's claim)
The webhook that finds the inbox empty publishes `drain_intake(merchant)`; the others only
add to it (a drain is on its way, or running and will loop back for them), unless the inbox
holds an event that could have been taken NUDGE_SECONDS ago and was not: its drain was lost
(a drain that failed while Redis restarted, a broker that lost the message), so this webhook
publishes one too, at most one per NUDGE_SECONDS per store (`inbox:nudged`), so that a
backlog under load does not turn every webhook into a drain. A drain claims the
inbox in batches (each event's score moves a lease ahead, so two drains never take the same
event, and a dead drain's events come back when the lease ends), handles them and removes
them; it loops until a claim finds nothing. Beat's `recover-intake` publishes a drain for any
store whose inbox has an event nobody took for RECOVER_AFTER_SECONDS (a lost drain message, a
dead drain). Handling an event twice is harmless (a customer already waiting for a read is
coalesced). The customer's name, mobile and e-mail stay in Redis, out of the broker and out
of Flower. Events nobody handled for INTAKE_KEEP_SECONDS are dropped by the next drain.
"""
from __future__ import annotations

import json

import redis
from redis.exceptions import NoScriptError

from service.state.keys import Keys

INTAKE_KEEP_SECONDS = 24 * 3600
# An event takeable this long and not taken has lost its drain (a lost message, a drain that
# died mid-batch: its events are takeable again when their claim ends). Short, because the
# webhook nudge needs a next webhook and a quiet store may send none; an extra drain for a
# store whose drain is only slow costs one task per beat tick and takes nothing twice.
RECOVER_AFTER_SECONDS = 20
CLAIM_SECONDS = 60  # a drain handles a batch in well under this
NUDGE_SECONDS = 5  # an event takeable this long and not taken: the next webhook publishes a drain

# KEYS: seen, inbox, nudged. ARGV: seen ttl, event, now.
# Returns 0: a repeat; 1: stored, a drain is on its way; 2: stored, publish a drain.
# The inbox's two lowest scores tell both what the webhook needs: one event alone is this one
# (the inbox was empty), and the lowest is the event takeable longest (a lost drain's, when
# that is NUDGE_SECONDS or more).
_ACCEPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
local first = redis.call('ZRANGE', KEYS[2], 0, 1, 'WITHSCORES')
if #first == 2 then return 2 end
if tonumber(first[2]) <= tonumber(ARGV[3]) - %d and redis.call('SET', KEYS[3], '1', 'NX', 'EX', %d) then return 2 end
return 1
""" % (NUDGE_SECONDS, NUDGE_SECONDS)

# KEYS: inbox. ARGV: now, limit, claim end, too old. The events that may be taken now, each
# leased; events nobody handled for a day are dropped first.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local taken = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, event in ipairs(taken) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], event) end
return taken
"""

REPEAT, STORED, PUBLISH = 0, 1, 2
# An event as the inbox keeps it: compact, UTF-8 text as it is (the encoder made once, not per webhook).
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Intake:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.keys = Keys(prefix)
        self._accept = store.register_script(_ACCEPT)
        self._claim = store.register_script(_CLAIM)

    def accept(self, merchant_id: int, digest: str, message: dict, seen_ttl: int, now: float) -> int:
        """REPEAT (these bytes were accepted before), STORED, or PUBLISH (stored in an empty
        inbox, or in one whose drain looks lost: the caller publishes a drain for the store)."""
        seen, inbox, nudged = self.keys.intake(merchant_id, digest)
        args = (seen.encode(), inbox.encode(), nudged.encode(), str(seen_ttl).encode(),
                _to_json(dict(message, digest=digest)).encode(), f"{now:.3f}".encode())
        # One round trip: EVALSHA itself (a pipeline would add a SCRIPT EXISTS), without redis-py's
        # Script wrapper, which cost each webhook as much as building its event; arguments as
        # bytes, which redis-py passes through rather than checking each one's type.
        try:
            outcome = int(self.redis.execute_command("EVALSHA", self._accept.sha, 3, *args))
        except NoScriptError:  # a Redis restarted or flushed since the script was loaded
            self._accept.sha = self.redis.script_load(_ACCEPT)
            outcome = int(self.redis.execute_command("EVALSHA", self._accept.sha, 3, *args))
        if outcome == PUBLISH:  # once a burst (a key of its own slot): the recovery walks these stores
            self.redis.sadd(self.keys.stores, merchant_id)
        return outcome

    def withdraw(self, merchant_id: int, digest: str) -> None:
        """The broker refused the drain: forget the event, so that Salla's retry is accepted."""
        k = self.keys.store(merchant_id)
        events = [raw for raw in self.redis.zrange(k.inbox, 0, -1) if _digest(raw) == digest]
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(k.seen(digest))
        if events:  # ZREM with no member is an error
            pipe.zrem(k.inbox, *events)
        pipe.execute()

    # -- the worker's side --------------------------------------------------------------------
    def claim(self, merchant_id: int, now: float, limit: int = 200) -> list[tuple[str, dict]]:
        """Up to `limit` events to handle, each leased for CLAIM_SECONDS: (raw, event) pairs;
        give the raw ones back to `done`."""
        k = self.keys.store(merchant_id)
        raws = self._claim(keys=[k.inbox], args=[f"{now:.3f}", limit, f"{now + CLAIM_SECONDS:.3f}",
                                                 f"{now - INTAKE_KEEP_SECONDS:.3f}"])
        return [(raw, json.loads(raw)) for raw in raws]

    def done(self, merchant_id: int, raws: list) -> None:
        if raws:
            self.redis.zrem(self.keys.store(merchant_id).inbox, *raws)

    def stalled(self, merchants: list[int], now: float) -> list[int]:
        """Stores with an event nobody took for RECOVER_AFTER_SECONDS (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for merchant_id in merchants:
            pipe.zrangebyscore(self.keys.store(merchant_id).inbox, "-inf", now - RECOVER_AFTER_SECONDS, start=0, num=1)
        return [m for m, found in zip(merchants, pipe.execute()) if found]

    def waiting(self, merchant_id: int) -> int:
        return int(self.redis.zcard(self.keys.store(merchant_id).inbox))

    def events(self, merchant_id: int) -> list[dict]:
        return [json.loads(raw) for raw in self.redis.zrange(self.keys.store(merchant_id).inbox, 0, -1)]


def _digest(raw) -> str | None:
    try:
        return json.loads(raw).get("digest")
    except ValueError:
        return None
