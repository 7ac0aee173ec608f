"""Accepted webhooks, kept in Redis until a worker has handled them.

A message handed to the broker can still be lost: with the Redis broker, a worker killed
between taking a message (BRPOP) and recording it as unacknowledged loses it for good; a
broker that restarts without its queues loses them all. So the web writes each accepted
event to its store's inbox in Redis first, in one script with the dedupe check:

  seen:<digest>     the delivery's bytes were accepted (WEBHOOK_DEDUPE_TTL_SECONDS)
  intake:<digest>   the event (JSON), until a worker has handled it (a day at most)
  inbox             digest -> when it was accepted (or last handed to the broker)

and the broker's message carries only the store and the digest. The worker reads the event
from Redis, handles it and removes it from the inbox. Beat looks for inbox entries older than
RECOVER_AFTER_SECONDS and hands them to the broker again (workers/tasks.py recover_intake),
so a lost message costs a minute or two, never the event. Handling an event twice is
harmless (a customer already waiting for a read is coalesced). Personal data (the
customer's name, mobile and e-mail) stays in Redis, out of the broker and out of Flower.
"""
from __future__ import annotations

import json

import redis

from service.keys import Keys

INTAKE_KEEP_SECONDS = 24 * 3600
RECOVER_AFTER_SECONDS = 60  # longer than a queued event takes to be handled in any healthy state

# KEYS: seen, intake, inbox. ARGV: digest, seen ttl, message, now, keep.
_ACCEPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""


class Intake:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.keys = Keys(prefix)
        self._accept = store.register_script(_ACCEPT)

    def accept(self, merchant_id: int, digest: str, message: dict, seen_ttl: int, now: float) -> bool:
        """Store a new event; False when these bytes were accepted before (a repeat)."""
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline(transaction=False)
        self._accept(keys=[k.seen(digest), k.intake(digest), k.inbox],
                     args=[digest, seen_ttl, json.dumps(message, ensure_ascii=False), f"{now:.3f}",
                           INTAKE_KEEP_SECONDS], client=pipe)
        pipe.sadd(self.keys.stores, merchant_id)  # the recovery walks the known stores
        return bool(pipe.execute()[0])

    def withdraw(self, merchant_id: int, digest: str) -> None:
        """The broker refused the message: forget the event, so that Salla's retry is accepted."""
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline()
        pipe.delete(k.seen(digest), k.intake(digest))
        pipe.zrem(k.inbox, digest)
        pipe.execute()

    def load(self, merchant_id: int, digest: str) -> dict | None:
        raw = self.redis.get(self.keys.store(merchant_id).intake(digest))
        return None if raw is None else json.loads(raw)

    def done(self, merchant_id: int, digest: str) -> None:
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline()
        pipe.delete(k.intake(digest))
        pipe.zrem(k.inbox, digest)
        pipe.execute()

    def overdue(self, merchant_id: int, now: float, limit: int = 500) -> list[str]:
        """Events accepted over RECOVER_AFTER_SECONDS ago and still not handled; each is marked
        as handed out again now, so that the next look does not repeat it at once."""
        k = self.keys.store(merchant_id)
        digests = self.redis.zrangebyscore(k.inbox, "-inf", now - RECOVER_AFTER_SECONDS, start=0, num=limit)
        digests = [d.decode() if isinstance(d, bytes) else d for d in digests]
        if digests:
            self.redis.zadd(k.inbox, {d: now for d in digests}, xx=True)
        return digests

    def waiting(self, merchant_id: int) -> int:
        return int(self.redis.zcard(self.keys.store(merchant_id).inbox))
