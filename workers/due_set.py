"""Reminders that are not due yet: a Redis sorted set scored by due time, claimed atomically.

Why not ETA/countdown tasks: on a Redis broker a task delayed past the visibility timeout is
delivered twice (celery#2599, kombu#337). A periodic sweep claims what is due instead.

Three keys, all under one hash tag so that every script touches a single cluster slot:
- `scheduled`:  member -> due time (unix seconds). What the sweep claims from.
- `processing`: member -> lease deadline. A claimed entry stays here until `ack`; if the
  claimer dies, the lease runs out and the entry goes back to `scheduled`.
- `by-customer`: every member of the other two, all with score 0, so that ZRANGEBYLEX finds a
  customer's or a store's entries by member prefix in O(log n + k). This is the index behind
  `cancel_customer` and `cancel_store`. It doubles the memory (one more sorted-set entry, ~118
  bytes per reminder) and costs ~4 us of Redis time per `ack` at a million entries (a ZREM at a
  random place of a big skiplist). The alternatives were worse: a key per customer costs ~150
  bytes of key overhead per customer and still needs a per-store list for uninstalls, and
  scanning the whole set on every opt-out is O(all reminders) of Redis time.

Members are compact ASCII (`DueEntry.encode`): base-36 merchant, customer and stage, and the
first 48 bits of the reminder id in base 36, joined by ':'. A member of real Salla ids is ~26
bytes, so each copy fits jemalloc's 32-byte size class; the decimal/hex form (~41 bytes) lands
in the 48-byte class, in both sorted sets. Measured: ~235 bytes per scheduled reminder in all
(bench/claim_benchmark.py, 1M reminders). ASCII rather than packed binary so that clients made
with `decode_responses=True` work too: members come back as `str` there and as `bytes`
otherwise, and `DueEntry.decode` takes either.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from service.keys import Keys
from service.redis_client import pipelined_script

# 48 bits tell apart the few lot sets one customer has in one stage; the rest of the key
# (merchant, customer, stage) is spelled out in full, so no wider collision is possible.
REMINDER_KEY_HEX = 12
DEFAULT_LEASE_SECONDS = 600.0
DEFAULT_BATCH = 1000

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
# Two digits per division: the sweep encodes and decodes a member per entry it handles.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# Canonical base 36 only (no leading zeros): one entry must have exactly one member, or the
# same entry could sit in the set twice.
_NUMBER = r"(0|[1-9a-z][0-9a-z]*)"
_MEMBER = re.compile(rf"^{_NUMBER}:{_NUMBER}:{_NUMBER}:{_NUMBER}$")
_HEX_KEY = re.compile(rf"^[0-9a-f]{{{REMINDER_KEY_HEX}}}$")


def _b36(number: int) -> str:
    pairs = []
    while number >= 36:
        number, pair = divmod(number, 1296)
        pairs.append(_PAIRS[pair])
    text = "".join(reversed(pairs))
    if number:
        return _ALPHABET[number] + text
    return text or "0"


@dataclass(frozen=True)
class DueEntry:
    """One future reminder: enough to re-read the customer's points and rebuild it.

    `reminder_key` is the first REMINDER_KEY_HEX hex digits of the reminder id; it keeps two
    lot sets of one customer in one stage (due on different days) apart in the set.
    """

    merchant_id: int
    customer_id: int
    stage_days: int
    reminder_key: str

    def __post_init__(self) -> None:
        for name in ("merchant_id", "customer_id", "stage_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not isinstance(self.reminder_key, str) or not _HEX_KEY.match(self.reminder_key):
            raise ValueError(f"reminder_key must be {REMINDER_KEY_HEX} lowercase hex digits, "
                             f"got {self.reminder_key!r}")

    @classmethod
    def for_reminder(cls, merchant_id: int, customer_id: int, stage_days: int, reminder_id: str) -> DueEntry:
        return cls(merchant_id, customer_id, stage_days, reminder_id[:REMINDER_KEY_HEX].lower())

    def matches(self, reminder_id: str) -> bool:
        """True if a rebuilt reminder has the lot set this entry was scheduled for."""
        return reminder_id[:REMINDER_KEY_HEX].lower() == self.reminder_key

    def encode(self) -> str:
        return ":".join((_b36(self.merchant_id), _b36(self.customer_id), _b36(self.stage_days),
                         _b36(int(self.reminder_key, 16))))

    @classmethod
    def decode(cls, member: str | bytes) -> DueEntry:
        text = member.decode("ascii", "replace") if isinstance(member, bytes) else member
        match = _MEMBER.match(text)
        if not match:
            raise ValueError(f"not a due-set member: {text!r}")
        merchant, customer, stage, key = (int(part, 36) for part in match.groups())
        if key >= 16 ** REMINDER_KEY_HEX:
            raise ValueError(f"not a due-set member (reminder key too long): {text!r}")
        return cls(merchant, customer, stage, format(key, f"0{REMINDER_KEY_HEX}x"))


def customer_prefix(merchant_id: int, customer_id: int) -> str:
    return f"{_b36(merchant_id)}:{_b36(customer_id)}:"


def store_prefix(merchant_id: int) -> str:
    return f"{_b36(merchant_id)}:"


def lex_range(prefix: str) -> tuple[str, str]:
    """ZRANGEBYLEX bounds of every member starting with `prefix` (which ends in ':').

    ';' is the byte after ':', so '(m:c;' excludes exactly what does not start with 'm:c:'.
    """
    return "[" + prefix, "(" + prefix[:-1] + ";"


# Lua's unpack() is limited by the C stack (~8000 values), so multi-member commands go in chunks.
_LUA_HELPERS = """
local CHUNK = 1000
local function zrem_all(key, members)
  for i = 1, #members, CHUNK do
    redis.call('ZREM', key, unpack(members, i, math.min(i + CHUNK - 1, #members)))
  end
end
local function zadd_all(key, score, members)
  for i = 1, #members, CHUNK do
    local args = {}
    for j = i, math.min(i + CHUNK - 1, #members) do
      args[#args + 1] = score
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
end
-- Leases that ran out go back to `scheduled`, due at their lease deadline. LT: an entry that was
-- scheduled again meanwhile keeps the earlier of the two times, so a dead claimer never delays it.
-- The expired ones are the lowest ranks of `processing`, hence ZREMRANGEBYRANK.
local function requeue(scheduled, processing, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', processing, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  local n = #expired / 2
  for i = 1, #expired, 2 * CHUNK do
    local args = {}
    for j = i, math.min(i + 2 * CHUNK - 1, #expired), 2 do
      args[#args + 1] = expired[j + 1]
      args[#args + 1] = expired[j]
    end
    redis.call('ZADD', scheduled, 'LT', unpack(args))
  end
  if n > 0 then redis.call('ZREMRANGEBYRANK', processing, 0, n - 1) end
  return n
end
"""

# KEYS: scheduled, index. ARGV: score, member, score, member, ...
_SCHEDULE = _LUA_HELPERS + """
local members = {}
for i = 1, #ARGV, 2 * CHUNK do
  local last = math.min(i + 2 * CHUNK - 1, #ARGV)
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, last))
  for j = i + 1, last, 2 do members[#members + 1] = ARGV[j] end
end
zadd_all(KEYS[2], 0, members)
return #members
"""

# KEYS: scheduled, processing. ARGV: now, limit, lease deadline.
# Expired leases are re-queued first, in the same call: a crashed sweeper's entries come back
# on the next sweep without a second round trip or a second periodic job.
# The due entries are the lowest ranks of `scheduled`, hence ZREMRANGEBYRANK.
_CLAIM = _LUA_HELPERS + """
local now, limit, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
requeue(KEYS[1], KEYS[2], now, limit)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #due - 1)
  -- A member still leased from an earlier claim (it was scheduled again meanwhile) takes the
  -- new lease: there is one lease per member.
  zadd_all(KEYS[2], lease, due)
end
return due
"""

# KEYS: scheduled, processing. ARGV: now, limit.
_REQUEUE = _LUA_HELPERS + """
return requeue(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
"""

# KEYS: scheduled, processing, index. ARGV: distinct members.
# The index entry stays if the member was scheduled again while it was being delivered.
_ACK = _LUA_HELPERS + """
local function present(key, members)
  local found = {}
  for i = 1, #members, CHUNK do
    local scores = redis.call('ZMSCORE', key, unpack(members, i, math.min(i + CHUNK - 1, #members)))
    for j = 1, #scores do
      if scores[j] then found[members[i + j - 1]] = true end
    end
  end
  return found
end
local leased, acked = present(KEYS[2], ARGV), {}
for i = 1, #ARGV do
  if leased[ARGV[i]] then acked[#acked + 1] = ARGV[i] end
end
zrem_all(KEYS[2], acked)
local again, finished = present(KEYS[1], acked), {}
for i = 1, #acked do
  if not again[acked[i]] then finished[#finished + 1] = acked[i] end
end
zrem_all(KEYS[3], finished)
return #acked
"""

# KEYS: scheduled, processing, index. ARGV: lex min, lex max, limit.
_CANCEL = _LUA_HELPERS + """
local members = redis.call('ZRANGEBYLEX', KEYS[3], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
zrem_all(KEYS[1], members)
zrem_all(KEYS[2], members)
zrem_all(KEYS[3], members)
return #members
"""


# KEYS: scheduled, processing, index. ARGV: members. Entries that are no longer wanted (a
# delivery that finished): gone from every set, leased or not.
_REMOVE = _LUA_HELPERS + """
zrem_all(KEYS[1], ARGV)
zrem_all(KEYS[2], ARGV)
zrem_all(KEYS[3], ARGV)
return #ARGV
"""


class DueSet:
    """Future reminders of all stores. Works with `decode_responses` on or off.

    Every method is one round trip, except `cancel_store` on a store with more than `batch`
    entries, which takes one per `batch` so that no single script blocks Redis for long.
    """

    def __init__(self, redis_client: redis.Redis, prefix: str,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, batch: int = DEFAULT_BATCH):
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.redis = redis_client
        self.lease_seconds = float(lease_seconds)
        self.batch = batch
        base = Keys(prefix).due_base
        self.scheduled_key = f"{base}:scheduled"
        self.processing_key = f"{base}:processing"
        self.index_key = f"{base}:by-customer"
        self._schedule = redis_client.register_script(_SCHEDULE)
        self._claim = redis_client.register_script(_CLAIM)
        self._requeue = redis_client.register_script(_REQUEUE)
        self._ack = redis_client.register_script(_ACK)
        self._cancel = redis_client.register_script(_CANCEL)
        self._remove = redis_client.register_script(_REMOVE)

    @property
    def keys(self) -> tuple[str, str, str]:
        return self.scheduled_key, self.processing_key, self.index_key

    def schedule(self, entries: Iterable[tuple[float, DueEntry]]) -> int:
        """Add entries, or move an already scheduled one to its new due time. Returns how many
        were passed. One round trip; atomic per `batch` entries, so that a big load never holds
        Redis in one long script."""
        args: list[float | str] = []
        for due_at, entry in entries:
            due_at = float(due_at)
            if not math.isfinite(due_at):
                raise ValueError(f"due time must be finite, got {due_at!r}")
            args += (due_at, entry.encode())
        if not args:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(args), 2 * self.batch):
            pipelined_script(self.redis, pipe, self._schedule, [self.scheduled_key, self.index_key],
                             args[start:start + 2 * self.batch])
        return sum(int(count) for count in pipe.execute())

    def claim(self, now: float, limit: int) -> list[DueEntry]:
        """Hand out up to `limit` entries due at `now`, earliest first, each to one caller only.

        Claimed entries are leased until now + lease_seconds; `ack` them once delivered. Leases
        that ran out are put back first, in the same script.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        members = self._claim(keys=[self.scheduled_key, self.processing_key],
                              args=[float(now), int(limit), float(now) + self.lease_seconds])
        return [DueEntry.decode(member) for member in members]

    def ack(self, entries: Iterable[DueEntry]) -> int:
        """Forget delivered entries. Returns how many were still leased."""
        members = list(dict.fromkeys(entry.encode() for entry in entries))
        if not members:
            return 0
        return int(self._ack(keys=list(self.keys), args=members))

    def remove(self, entries: Iterable[DueEntry]) -> None:
        """Forget entries wherever they are (scheduled or leased)."""
        members = list(dict.fromkeys(entry.encode() for entry in entries))
        if members:
            self._remove(keys=list(self.keys), args=members)

    def next_due(self) -> float | None:
        """When the earliest scheduled entry is due (None: nothing scheduled)."""
        first = self.redis.zrange(self.scheduled_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def requeue_expired(self, now: float, limit: int = DEFAULT_BATCH) -> int:
        """Put back up to `limit` entries whose lease ran out by `now`. Returns how many."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return int(self._requeue(keys=[self.scheduled_key, self.processing_key], args=[float(now), int(limit)]))

    def cancel_customer(self, merchant_id: int, customer_id: int) -> int:
        """Drop a customer's entries, scheduled or leased (opt-out, all points used)."""
        return self._cancel_prefix(customer_prefix(merchant_id, customer_id))

    def cancel_store(self, merchant_id: int) -> int:
        """Drop every entry of a store (app uninstalled)."""
        return self._cancel_prefix(store_prefix(merchant_id))

    def customer_entries(self, merchant_id: int, customer_id: int) -> list[dict]:
        """A customer's entries, scheduled or leased, with their due time (export)."""
        low, high = lex_range(customer_prefix(merchant_id, customer_id))
        found = []
        for member in self.redis.zrangebylex(self.index_key, low, high):
            entry = DueEntry.decode(member)
            due = self.redis.zscore(self.scheduled_key, member)
            leased = self.redis.zscore(self.processing_key, member)
            found.append({"stage_days": entry.stage_days, "reminder_key": entry.reminder_key,
                          "due_at": due, "leased_until": leased})
        return found

    def pending_count(self) -> int:
        """Entries waiting to be claimed (leased ones are not counted)."""
        return int(self.redis.zcard(self.scheduled_key))

    def processing_count(self) -> int:
        """Entries claimed and not acked yet."""
        return int(self.redis.zcard(self.processing_key))

    def _cancel_prefix(self, prefix: str) -> int:
        low, high = lex_range(prefix)
        total = 0
        while True:
            removed = int(self._cancel(keys=list(self.keys), args=[low, high, self.batch]))
            total += removed
            if removed < self.batch:
                return total
