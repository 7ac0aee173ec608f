"""Reminders that are not due yet: a Redis sorted set scored by due time, claimed atomically.

Why not ETA/countdown tasks: on a Redis broker a task delayed past the visibility timeout is
delivered twice (celery#2599, kombu#337). A periodic sweep claims what is due instead.

Sharded by store (DUE_SET_SHARDS, `shard_of`): at ~630 bytes of due set per customer one set
for every store outgrows one Redis node, and all of the sweep's work would land on that node.
Each shard is three keys, all under one hash tag so that every script touches a single slot:
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

from service.state.keys import Keys
from service.state.redis_client import pipelined_script
from service.config.settings import MAX_DUE_SET_SHARDS

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

# KEYS: scheduled, processing. ARGV: now, limit, lease deadline. Returns member, score, ...
# Expired leases are re-queued first, in the same call: a crashed sweeper's entries come back
# on the next sweep without a second round trip or a second periodic job.
# The due entries are the lowest ranks of `scheduled`, hence ZREMRANGEBYRANK. The scores come
# back too, so that batches claimed from several shards merge earliest first.
_CLAIM = _LUA_HELPERS + """
local now, limit, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
requeue(KEYS[1], KEYS[2], now, limit)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local n = #due / 2
if n > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
  local members = {}
  for i = 1, #due, 2 do members[#members + 1] = due[i] end
  -- A member still leased from an earlier claim (it was scheduled again meanwhile) takes the
  -- new lease: there is one lease per member.
  zadd_all(KEYS[2], lease, members)
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

# KEYS: scheduled, processing, index (of the shard an entry moves to). ARGV: n, then n pairs of
# due time and member for `scheduled`, then pairs of lease deadline and member for `processing`.
# LT: an entry already there (scheduled again under the new layout) keeps the earlier time, so
# a move never delays anything.
_ADOPT = _LUA_HELPERS + """
local n = tonumber(ARGV[1])
local function zadd_pairs(key, first, last)
  for i = first, last, 2 * CHUNK do
    redis.call('ZADD', key, 'LT', unpack(ARGV, i, math.min(i + 2 * CHUNK - 1, last)))
  end
end
zadd_pairs(KEYS[1], 2, 1 + 2 * n)
zadd_pairs(KEYS[2], 2 + 2 * n, #ARGV)
local members = {}
for i = 3, #ARGV, 2 do members[#members + 1] = ARGV[i] end
zadd_all(KEYS[3], 0, members)
return #members
"""


MAX_SHARDS = MAX_DUE_SET_SHARDS


def shard_of(merchant_id: int, shards: int) -> int:
    """The shard of every entry of a store: its merchant id modulo the number of shards.

    By store, not by customer: an uninstall drops a store's entries from one shard, and a
    customer's opt-out touches one shard. Modulo rather than a hash: an operator can say where
    a store is by hand (`python -m service.cli due-set` shows the counts per shard), and Salla's
    merchant ids are large unrelated numbers, so their remainders spread evenly. A store is
    never split, so one huge store stays on one shard; at 630 bytes a customer even a
    million-customer store is ~0.6 GB.
    """
    return merchant_id % shards


def split_quota(limit: int, shards: list[int], start: int) -> dict[int, int]:
    """`limit` claims spread over `shards` as evenly as whole numbers allow. The odd ones go to
    the shards from position `start` on; the caller moves `start` on by that many each call, so
    with fewer claims than shards every shard still gets its turn. Shards with 0 are left out."""
    if not shards:
        return {}
    base, extra = divmod(limit, len(shards))
    quotas = dict.fromkeys(shards, base)
    for k in range(extra):
        quotas[shards[(start + k) % len(shards)]] += 1
    return {shard: quota for shard, quota in quotas.items() if quota}


def _text(member: str | bytes) -> str:
    return member.decode("ascii", "replace") if isinstance(member, bytes) else member


class DueSet:
    """Future reminders of all stores, in `shards` shards by merchant id (`shard_of`). Works with
    `decode_responses` on or off, on one Redis or a cluster.

    Each shard is three sorted sets under a hash tag of its own (`Keys.due_shard_base`): its
    scripts stay in one slot, and a cluster puts the shards on different nodes. Shard 0 has the
    key names of the unsharded set, so one shard is exactly the set as it always was.

    One round trip per method with one shard (a pipeline of one script per shard touched with
    more), except `cancel_store` on a store with more than `batch` entries, which takes one per
    `batch` so that no single script blocks Redis for long. Changing the number of shards moves
    no entry by itself: `reshard` (`python -m service.cli reshard-due-set --from OLD`) does.
    """

    def __init__(self, redis_client: redis.Redis, prefix: str,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, batch: int = DEFAULT_BATCH, shards: int = 1):
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be a whole number from 1 to {MAX_SHARDS}, got {shards!r}")
        self.redis = redis_client
        self.prefix = prefix
        self.lease_seconds = float(lease_seconds)
        self.batch = batch
        self.shards = shards
        self._shard_keys = [self._keys_of(Keys(prefix).due_shard_base(shard)) for shard in range(shards)]
        # Shard 0's keys under their old names: what tools and tests of one shard read.
        self.scheduled_key, self.processing_key, self.index_key = self._shard_keys[0]
        self._turn = 0  # where the next claim's odd quotas start (`split_quota`)
        self._schedule = redis_client.register_script(_SCHEDULE)
        self._claim = redis_client.register_script(_CLAIM)
        self._requeue = redis_client.register_script(_REQUEUE)
        self._ack = redis_client.register_script(_ACK)
        self._cancel = redis_client.register_script(_CANCEL)
        self._remove = redis_client.register_script(_REMOVE)
        self._adopt = redis_client.register_script(_ADOPT)

    @staticmethod
    def _keys_of(base: str) -> tuple[str, str, str]:
        return f"{base}:scheduled", f"{base}:processing", f"{base}:by-customer"

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key of every shard, shard 0's three first."""
        return tuple(key for triple in self._shard_keys for key in triple)

    def shard_keys(self, shard: int) -> tuple[str, str, str]:
        """scheduled, processing and index of one shard (any shard number, also one beyond
        `shards`: `reshard` reads the shards of an older, larger layout)."""
        if shard < len(self._shard_keys):
            return self._shard_keys[shard]
        return self._keys_of(Keys(self.prefix).due_shard_base(shard))

    def shard_of(self, merchant_id: int) -> int:
        return shard_of(merchant_id, self.shards)

    # -- round trips ------------------------------------------------------------------------
    def _run(self, calls: list[tuple]) -> list:
        """(script, keys, args) calls: one directly, more in one pipeline without MULTI (on a
        cluster it is split by node; each script is atomic on its own, which is all we need)."""
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [script(keys=keys, args=args)]
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipelined_script(self.redis, pipe, script, list(keys), args)
        return pipe.execute()

    def _read_all(self, command: str, *args, key_index: int = 0, **options) -> list:
        """One read command on one key of every shard, in one pipeline."""
        if self.shards == 1:
            return [getattr(self.redis, command)(self._shard_keys[0][key_index], *args, **options)]
        pipe = self.redis.pipeline(transaction=False)
        for triple in self._shard_keys:
            getattr(pipe, command)(triple[key_index], *args, **options)
        return pipe.execute()

    def _by_shard(self, entries: Iterable[DueEntry]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for entry in entries:
            groups.setdefault(self.shard_of(entry.merchant_id), []).append(entry.encode())
        return {shard: list(dict.fromkeys(members)) for shard, members in groups.items()}

    # -- the API ----------------------------------------------------------------------------
    def schedule(self, entries: Iterable[tuple[float, DueEntry]]) -> int:
        """Add entries, or move an already scheduled one to its new due time. Returns how many
        were passed. One round trip; atomic per `batch` entries of one shard, so that a big load
        never holds Redis in one long script."""
        groups: dict[int, list[float | str]] = {}
        for due_at, entry in entries:
            due_at = float(due_at)
            if not math.isfinite(due_at):
                raise ValueError(f"due time must be finite, got {due_at!r}")
            groups.setdefault(self.shard_of(entry.merchant_id), []).extend((due_at, entry.encode()))
        calls = []
        for shard, args in sorted(groups.items()):
            scheduled, _, index = self._shard_keys[shard]
            calls += [(self._schedule, [scheduled, index], args[start:start + 2 * self.batch])
                      for start in range(0, len(args), 2 * self.batch)]
        if not calls:
            return 0
        return sum(int(count) for count in self._run(calls))

    def claim(self, now: float, limit: int) -> list[DueEntry]:
        """Hand out up to `limit` entries due at `now`, each to one caller only, earliest first
        within the batch.

        Claimed entries are leased until now + lease_seconds; `ack` them once delivered. Leases
        that ran out are put back first, in the same script. With several shards the batch is
        shared fairly (`_fair`): each shard gets an equal part of `limit`, and what a shard with
        fewer due entries leaves goes to the others, so one busy shard never starves the rest.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        now = float(now)
        deadline = now + self.lease_seconds
        results = self._fair(limit, lambda shard, quota: (
            self._claim, self._shard_keys[shard][:2], [now, quota, deadline]), lambda flat: len(flat) // 2)
        pairs = []
        for flat in results:
            pairs += [(float(flat[i + 1]), _text(flat[i])) for i in range(0, len(flat), 2)]
        if self.shards > 1:
            pairs.sort()
        return [DueEntry.decode(member) for _, member in pairs]

    def _fair(self, limit: int, call, count) -> list:
        """Run `call(shard, quota)` over the shards with `limit` split evenly (`split_quota`); a
        shard that gave all it was asked may have more, so what the others left is split again
        among those and the shards not asked yet, until `limit` is reached or every shard is
        drained. Each round is one pipeline; a round either hands out something from every shard
        asked or closes some, so it ends."""
        start = self._turn
        self._turn = (start + limit % self.shards) % self.shards
        open_shards = list(range(self.shards))
        quotas = split_quota(limit, open_shards, start)
        results, remaining = [], limit
        while quotas:
            asked = list(quotas)
            answers = self._run([call(shard, quotas[shard]) for shard in asked])
            drained = set()
            for shard, answer in zip(asked, answers):
                results.append(answer)
                got = count(answer)
                remaining -= got
                if got < quotas[shard]:
                    drained.add(shard)
            if remaining <= 0:
                break
            # Shards not asked yet (fewer claims than shards) and shards that gave all they
            # were asked stay open.
            open_shards = [shard for shard in open_shards if shard not in drained]
            quotas = split_quota(remaining, open_shards, start)
        return results

    def ack(self, entries: Iterable[DueEntry]) -> int:
        """Forget delivered entries. Returns how many were still leased."""
        calls = [(self._ack, self._shard_keys[shard], members) for shard, members in self._by_shard(entries).items()]
        return sum(int(count) for count in self._run(calls)) if calls else 0

    def remove(self, entries: Iterable[DueEntry]) -> None:
        """Forget entries wherever they are (scheduled or leased)."""
        calls = [(self._remove, self._shard_keys[shard], members)
                 for shard, members in self._by_shard(entries).items()]
        if calls:
            self._run(calls)

    def next_due(self) -> float | None:
        """When the earliest scheduled entry is due, over every shard (None: nothing scheduled)."""
        firsts = [float(first[0][1]) for first in self._read_all("zrange", 0, 0, withscores=True) if first]
        return min(firsts) if firsts else None

    def requeue_expired(self, now: float, limit: int = DEFAULT_BATCH) -> int:
        """Put back up to `limit` entries whose lease ran out by `now`, shared over the shards
        like `claim`. Returns how many."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        results = self._fair(limit, lambda shard, quota: (
            self._requeue, self._shard_keys[shard][:2], [float(now), quota]), int)
        return sum(int(count) for count in results)

    def cancel_customer(self, merchant_id: int, customer_id: int) -> int:
        """Drop a customer's entries, scheduled or leased (opt-out, all points used). They are
        all in the store's shard; this runs on every opt-out, so it asks that shard only."""
        return self._cancel_prefix(customer_prefix(merchant_id, customer_id), [self.shard_of(merchant_id)])

    def cancel_store(self, merchant_id: int) -> int:
        """Drop every entry of a store (app uninstalled). Every shard is asked, not only the
        store's: an uninstall is rare, and its erasure must be complete even if the number of
        shards was changed and `reshard` has not run yet."""
        return self._cancel_prefix(store_prefix(merchant_id), list(range(self.shards)))

    def customer_entries(self, merchant_id: int, customer_id: int) -> list[dict]:
        """A customer's entries, scheduled or leased, with their due time (export)."""
        low, high = lex_range(customer_prefix(merchant_id, customer_id))
        scheduled_key, processing_key, index_key = self.shard_keys(self.shard_of(merchant_id))
        found = []
        for member in self.redis.zrangebylex(index_key, low, high):
            entry = DueEntry.decode(member)
            due = self.redis.zscore(scheduled_key, member)
            leased = self.redis.zscore(processing_key, member)
            found.append({"stage_days": entry.stage_days, "reminder_key": entry.reminder_key,
                          "due_at": due, "leased_until": leased})
        return found

    def pending_count(self) -> int:
        """Entries waiting to be claimed, in all shards (leased ones are not counted)."""
        return sum(int(n) for n in self._read_all("zcard"))

    def processing_count(self) -> int:
        """Entries claimed and not acked yet, in all shards."""
        return sum(int(n) for n in self._read_all("zcard", key_index=1))

    def counts(self) -> list[dict]:
        """Per shard: pending, processing, and the node-independent key of its index (for the
        operator's `due-set` command: a skewed shard shows here)."""
        pending, processing = self._read_all("zcard"), self._read_all("zcard", key_index=1)
        return [{"shard": shard, "pending": int(p), "processing": int(q), "key": self._shard_keys[shard][0]}
                for shard, (p, q) in enumerate(zip(pending, processing))]

    def _cancel_prefix(self, prefix: str, shards: list[int]) -> int:
        low, high = lex_range(prefix)
        total = 0
        while shards:
            removed = self._run([(self._cancel, self._shard_keys[shard], [low, high, self.batch]) for shard in shards])
            total += sum(int(n) for n in removed)
            # A shard that gave a full batch may hold more.
            shards = [shard for shard, n in zip(shards, removed) if int(n) >= self.batch]
        return total

    # -- moving entries when the number of shards changes -----------------------------------
    def reshard(self, from_shards: int, progress=None, dry_run: bool = False) -> dict:
        """Move every entry that is not in its shard under `self.shards` there, from shards
        0..max(from_shards, shards)-1. Safe to run again (a second run moves nothing) and while
        the service runs: an entry is added to its new shard before it leaves the old one, so it
        is never missing. A sweep that claims it from the old shard in between may see it once
        more from the new one; the sweep already takes that in its stride (a lease that runs out
        does the same). Returns how many moved, per source shard, and the new counts.
        `progress(done, total)` is called after each source shard (the CLI's bar); dry_run counts
        what would move and moves nothing.
        """
        if isinstance(from_shards, bool) or not isinstance(from_shards, int) or not 1 <= from_shards <= MAX_SHARDS:
            raise ValueError(f"from_shards must be a whole number from 1 to {MAX_SHARDS}, got {from_shards!r}")
        moved: dict[int, int] = {}
        sources = max(from_shards, self.shards)
        for source in range(sources):
            count = self._move_misplaced(source, dry_run)
            if count:
                moved[source] = count
            if progress:
                progress(source + 1, sources)
        answer = {"from": from_shards, "to": self.shards, "moved": sum(moved.values()),
                  "moved_by_source_shard": moved, "shards": self.counts()}
        return {**answer, "dry_run": True} if dry_run else answer

    def _move_misplaced(self, source: int, dry_run: bool = False) -> int:
        scheduled, processing, index = self.shard_keys(source)
        low, moved = "-", 0
        while True:
            page = [_text(m) for m in self.redis.zrangebylex(index, low, "+", start=0, num=self.batch)]
            if not page:
                return moved
            low = "(" + page[-1]
            away: dict[int, list[str]] = {}
            for member in page:
                target = self.shard_of(DueEntry.decode(member).merchant_id)
                if target != source:
                    away.setdefault(target, []).append(member)
            for target, members in away.items():
                moved += len(members) if dry_run else self._move(members, source, target)

    def _move(self, members: list[str], source: int, target: int) -> int:
        scheduled, processing, _ = self.shard_keys(source)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zmscore(scheduled, members)
        pipe.zmscore(processing, members)
        due_times, leases = pipe.execute()
        waiting = [(score, m) for m, score in zip(members, due_times) if score is not None]
        leased = [(score, m) for m, score in zip(members, leases) if score is not None]
        if waiting or leased:
            args: list = [len(waiting)]
            for score, member in waiting + leased:
                args += (float(score), member)
            self._adopt(keys=list(self.shard_keys(target)), args=args)
        # Index entries with neither a time nor a lease are leftovers: dropped, not moved.
        self._remove(keys=list(self.shard_keys(source)), args=members)
        return len({member for _, member in waiting + leased})
