"""Every Redis key this service writes, in one place, with its lifetime and its owner.

A store's keys all start with `{prefix}{store:<merchant>}:`. The braces are a Redis Cluster
hash tag: every key of one store lives in one slot, so a Lua script can touch several of them
(declared in KEYS), and dropping a store is a SCAN of that one pattern (`StoreKeys.pattern`),
not a hunt. The few keys shared by all stores are at the top. On a Redis Cluster
(REDIS_CLUSTER=1) a write that touches a shared key and a store's key is a pipeline without
MULTI (two slots); an atomic pipeline or a script stays within one hash tag (README, "Redis Cluster").

| key                               | type   | lifetime                     | owner                   |
|-----------------------------------|--------|------------------------------|-------------------------|
| stores                            | set    | forever (merchant ids seen)  | service/state/stores.py       |
| sync:backlog                      | set    | while a store has reads      | service/state/budget.py       |
| beat:last                         | string | overwritten every minute     | workers/tasks.py        |
| beat:alive                        | string | overwritten as beat ticks    | workers/beat.py         |
| admin:audit                       | list   | last ADMIN_AUDIT_KEEP changes | service/ops/admin_guard.py |
| admin:auth-failures:<ip>          | zset   | 60 s (a sliding window)      | service/ops/admin_guard.py  |
| alarm:<name>                      | hash   | 7 days after its last raise, or cleared | service/state/alarms.py |
| secret:<purpose>                  | string | forever (encrypted; rotate-token-keys re-encrypts) | service/state/deployment_secrets.py |
| msg-index:<provider>:<handle>     | string | its reminder record's lifetime (ids only) | service/state/message_index.py |
| msg-early:<provider>:<handle>     | list   | EARLY_STATUS_SECONDS (10 min) | service/state/message_index.py |
| {due}:scheduled/processing/by-customer | zset | entries until acked         | service/state/due_set.py      |
| {backfill}:running, :queue, :reads, :starved | zset | a store until its run ends; a read's place until it ends or its lease runs out | service/ops/backfill.py, workers/backfill.py |
| {due:i}:… (shard i>0, DUE_SET_SHARDS) | zset | entries until acked         | service/state/due_set.py      |
| per store, `{store:M}:` +         |        |                              |                         |
|   state, config                   | hash   | kept after uninstall         | service/state/stores.py       |
|   counters, stats                 | hash   | kept after uninstall         | stores.py, ledger.py    |
|   holdout (sums per group, stage) | hash   | kept after uninstall (no id) | service/state/holdout.py      |
|   tokens                          | string | until uninstall              | service/state/tokens.py       |
|   token-lock                      | string | lock, 60 s                   | service/state/tokens.py       |
|   app-event-at                    | string | kept after uninstall         | service/web/webhooks.py     |
|   seen:<sha256 of the body>       | string | WEBHOOK_DEDUPE_TTL_SECONDS   | service/state/intake.py       |
|   inbox                           | zset   | events until handled (a day at most) | service/state/intake.py |
|   inbox:nudged                    | string | NUDGE_SECONDS                | service/state/intake.py       |
|   no-loyalty, blocked-until       | string | TTL                          | stores.py, budget.py    |
|   loyalty-ok                      | string | until uninstall              | workers/sync.py         |
|   budget:plan, budget:customer    | zset   | TTL = the window             | service/state/budget.py       |
|   pending, inflight               | zset   | while reads wait / run       | service/state/budget.py       |
|   correlation                     | hash   | customer -> the webhook's id, while a read waits; 1 day | workers/sync.py |
|   pages, attempts                 | hash   | per customer: until the retention sweep | service/state/budget.py, sync |
|   pump                            | string | TTL (a pump is scheduled)    | workers/tasks.py        |
|   dead                            | zset   | each as its record (scored by its expiry) | service/state/ledger.py |
|   customer:C (profile, last read) | hash   | DATA_RETENTION_DAYS after last seen | profiles.py, last_read.py |
|   lots:C (a read too big for the profile's listpack; an earlier version's) | string | as the profile (DATA_RETENTION_DAYS) | service/state/last_read.py |
|   marks:C                         | hash   | past the last lot's expiry   | service/state/ledger.py       |
|   recheck:C                       | set    | 1 day                        | workers/reminding.py    |
|   reminder:<id> (the ledger)      | hash   | past the last lot's expiry   | service/state/ledger.py       |
|   msgid:<channel>:<provider id>   | string | as its reminder's record     | service/state/ledger.py       |
|   statuses                        | hash   | kept after uninstall         | service/state/ledger.py       |
|   channels (encrypted settings)   | string | until uninstall              | service/state/channel_settings.py |
|   templates                       | hash   | until uninstall              | service/state/channel_settings.py |
|   app-settings                    | hash   | kept after uninstall         | service/state/stores.py       |
|   backfill (cursor, progress)     | hash   | until the next run/uninstall | workers/backfill.py     |
|   backfill:pending, :reading      | zset, set | while the backfill runs   | service/state/budget.py       |
|   backfill:seen                   | set    | until the run ends           | workers/backfill.py     |
|   backfill:listing                | string | lock, 60 s                   | workers/backfill.py     |
|   read-at                         | zset   | DATA_RETENTION_DAYS (swept)  | workers/sync.py, backfill |
|   erasures                        | list   | kept after uninstall (no id) | service/ops/personal_data.py |
|   suppressed                      | hash   | forever, through forget and uninstall (no id) | service/state/profiles.py |
|   week:<YYYY-Www>                 | hash   | WEEK_KEEP_SECONDS (~4 months) | service/state/store_figures.py |
|   month:<YYYY-MM>, reached:<YYYY-MM> | hash, HyperLogLog | MONTH_KEEP_SECONDS (~13 months) | service/state/store_figures.py |
|   recent                          | list   | the last 20 reminder ids; RECENT_KEEP_SECONDS after the last | service/state/store_figures.py |

`LIFETIMES` below says the same per key pattern, for code: a key either expires (Redis has a
TTL on it) or is owned (named code deletes it, and says when). tests/unit/test_key_lifetimes.py
runs the flows and checks every key they leave against it. A new key gets a line in both.

Uninstall (workers/tasks.py forget_store) deletes every key of the store's pattern except
`KEPT_AFTER_UNINSTALL`: what an operator needs to see what happened (state, settings, counters),
and the time of the last app event (so that a late retry of an older one is still refused);
and the suppression entries, which name nobody and keep an opt-out through a new install.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Lifetime:
    """How a key ends. `expires`: Redis has a TTL on it (set on every write). Otherwise `ends`
    says which code deletes it, and when."""
    expires: bool
    ends: str


def expires(how: str) -> Lifetime:
    return Lifetime(True, how)


def owned(by: str) -> Lifetime:
    return Lifetime(False, by)


UNINSTALL = "workers/lifecycle.py forget_store, at uninstall"
KEPT = "kept after uninstall (KEPT_AFTER_UNINSTALL: no personal data)"

# Shared keys, by pattern after the prefix. One line per key of the table above.
SHARED_LIFETIMES: dict[str, Lifetime] = {
    "stores": owned("never deleted: the merchant ids seen, no personal data (service/state/stores.py)"),
    "sync:backlog": owned("service/state/budget.py dispatch removes a store once it has no reads"),
    "beat:last": owned("one string, overwritten every minute (workers/tasks.py)"),
    "beat:alive": owned("one string, overwritten as beat ticks (workers/beat.py)"),
    "admin:audit": owned("service/ops/admin_guard.py trims it to ADMIN_AUDIT_KEEP entries"),
    "admin:auth-failures:*": expires("60 s sliding window (service/ops/admin_guard.py)"),
    "alarm:*": expires("ALARM_KEEP_SECONDS after its last raise, or cleared (service/state/alarms.py)"),
    # Deleting one would change every keyed hash made with it (holdout groups, suppression).
    "secret:*": owned("never deleted: one random key per purpose, encrypted (service/state/deployment_secrets.py)"),
    # The delivery engineer's cross-store message index (issue 15 items 12-13, service/state/message_index.py).
    "msg-index:*": expires("its reminder record's lifetime"),
    "msg-early:*": expires("EARLY_STATUS_SECONDS"),
    "{due}:*": owned("service/state/due_set.py removes each entry when it is acked"),
    "{backfill}:*": owned("service/ops/backfill.py, workers/backfill.py: a store leaves when its run ends "
                          "(done, failed, uninstall) or, from `running`, when its lease runs out; "
                          "service/state/budget.py: a read's place when it ends or its lease runs out, "
                          "a starved store when a place is free"),
    "{due:*}:*": owned("service/state/due_set.py removes each entry when it is acked"),
}

# A store's keys, by pattern after `{store:<merchant>}:`.
STORE_LIFETIMES: dict[str, Lifetime] = {
    "state": owned(KEPT), "config": owned(KEPT), "counters": owned(KEPT), "stats": owned(KEPT),
    "statuses": owned(KEPT), "app-event-at": owned(KEPT), "app-settings": owned(KEPT),
    "holdout": owned(KEPT + "; the holdout's sums per group and stage, no customer (service/state/holdout.py)"),
    "erasures": owned(KEPT + "; service/ops/personal_data.py trims it to ERASURES_KEPT"),
    "suppressed": owned(KEPT + "; kept for good: opt-outs as keyed hashes (service/domain/suppression.py)"),
    "tokens": owned(UNINSTALL), "channels": owned(UNINSTALL), "templates": owned(UNINSTALL),
    "loyalty-ok": owned(UNINSTALL),
    "token-lock": expires("a lock, 60 s"),
    "seen:*": expires("WEBHOOK_DEDUPE_TTL_SECONDS"),
    "inbox": owned("service/state/intake.py's drain removes each event once handled (a day at most)"),
    "inbox:nudged": expires("NUDGE_SECONDS"),
    "no-loyalty": expires("LOYALTY_MISSING_RETRY_SECONDS"),
    "blocked-until": expires("until Salla's block ends, + 60 s"),
    "budget:plan": expires("the plan window"), "budget:customer": expires("the customer window"),
    "pending": owned("service/state/budget.py: each read leaves it when dispatched; drop_store, uninstall"),
    "inflight": owned("service/state/budget.py: each read leaves it when done or requeued"),
    "correlation": expires("CORRELATION_KEEP_SECONDS after the last write; fields go with their read "
                           "(workers/tasks.py), drop_store, the retention sweep"),
    "pages": owned("per customer: the retention sweep (workers/backfill.py resync), forget; "
                   "the hash at uninstall"),
    "attempts": owned("per customer: after a read or giving up (workers/sync.py), the retention sweep; "
                      "the hash at uninstall"),
    "pump": expires("while a pump is scheduled"),
    "dead": expires("as its longest-lived record; each member scored by its record's expiry "
                    "(service/state/ledger.py), replay and drop remove it"),
    "customer:*": expires("DATA_RETENTION_DAYS after last seen (service/state/profiles.py); the last read "
                          "kept in it goes with it (service/state/last_read.py)"),
    "lots:*": expires("as the profile; a read that fits the profile's listpack moves into it "
                      "(service/state/last_read.py)"),
    "marks:*": expires("past the last lot's expiry (service/state/ledger.py)"),
    "recheck:*": expires("1 day"),
    "reminder:*": expires("past the last lot's expiry (service/state/ledger.py)"),
    "msgid:*": expires("as its reminder's record"),
    "backfill": owned("service/ops/backfill.py start replaces it; " + UNINSTALL),
    "backfill:pending": owned("service/state/budget.py dispatch takes each customer; " + UNINSTALL),
    "backfill:reading": owned("workers/backfill.py read_done removes each read"),
    "backfill:seen": owned("workers/backfill.py deletes it when the run ends (done or failed)"),
    "backfill:listing": expires("a lock, 60 s"),
    "read-at": owned("workers/backfill.py resync removes customers past DATA_RETENTION_DAYS"),
    # The embedded page's figures, kept as reminders happen (service/state/store_figures.py).
    "week:*": expires("WEEK_KEEP_SECONDS after its last write"),
    "month:*": expires("MONTH_KEEP_SECONDS after its last write"),
    "reached:*": expires("MONTH_KEEP_SECONDS after its last write"),
    "recent": expires("RECENT_KEEP_SECONDS after its last write; trimmed to RECENT_KEPT ids"),
}


def lifetime(prefix: str, key: str) -> Lifetime | None:
    """The documented lifetime of a key as found in Redis, or None: a key nobody documented."""
    if not key.startswith(prefix):
        return None
    name = key[len(prefix):]
    table = SHARED_LIFETIMES
    if name.startswith("{store:") and "}:" in name:
        name, table = name.split("}:", 1)[1], STORE_LIFETIMES
    return next((found for pattern, found in table.items() if fnmatch.fnmatchcase(name, pattern)), None)


# What an operator still needs after a store uninstalled: no personal data in any of them.
KEPT_AFTER_UNINSTALL = ("state", "config", "counters", "stats", "statuses", "app-event-at", "app-settings",
                        "erasures", "suppressed", "holdout")


class Keys:
    def __init__(self, prefix: str):
        self.prefix = prefix

    # -- shared by all stores ------------------------------------------------------------------
    @property
    def stores(self) -> str:
        return f"{self.prefix}stores"

    @property
    def backlog(self) -> str:
        return f"{self.prefix}sync:backlog"

    @property
    def beat_last(self) -> str:
        return f"{self.prefix}beat:last"

    @property
    def beat_alive(self) -> str:
        """Written by beat itself as it ticks (beat:last is written by a worker that ran beat's task)."""
        return f"{self.prefix}beat:alive"

    @property
    def admin_audit(self) -> str:
        return f"{self.prefix}admin:audit"

    def admin_auth_failures(self, client_ip: str) -> str:
        return f"{self.prefix}admin:auth-failures:{client_ip}"

    def alarm(self, name: str) -> str:
        return f"{self.prefix}alarm:{name}"

    def deployment_secret(self, purpose: str) -> str:
        """One random key of the deployment per purpose (service/state/deployment_secrets.py)."""
        return f"{self.prefix}secret:{purpose}"

    @property
    def alarm_pattern(self) -> str:
        return f"{self.prefix}alarm:*"

    def message_index(self, provider: str, handle: str) -> str:
        """A provider's message (its id, or the CorrelationID we sent) -> `<merchant>:<reminder>:<channel>`,
        across stores: a provider account shared by several stores has one report URL."""
        return f"{self.prefix}msg-index:{provider}:{handle}"

    def early_statuses(self, provider: str, handle: str) -> str:
        """Statuses that arrived before their send was recorded, kept until it is (or they expire)."""
        return f"{self.prefix}msg-early:{provider}:{handle}"

    @property
    def backfill_running(self) -> str:
        """Stores backfilling now -> their slot's lease deadline (BACKFILL_MAX_STORES, service/ops/backfill.py).
        One hash tag with the queue: the admission script touches both."""
        return f"{self.prefix}{{backfill}}:running"

    @property
    def backfill_queue(self) -> str:
        """Stores waiting for a backfill slot -> when they were queued (install order)."""
        return f"{self.prefix}{{backfill}}:queue"

    @property
    def backfill_reads(self) -> str:
        """Backfill reads in flight fleet-wide ("M:C", or a pump's reservation) -> when the place
        runs out (BACKFILL_MAX_READS, service/state/budget.py)."""
        return f"{self.prefix}{{backfill}}:reads"

    @property
    def backfill_starved(self) -> str:
        """Stores with backfill reads waiting that found no fleet-wide place -> when they asked."""
        return f"{self.prefix}{{backfill}}:starved"

    @property
    def due_base(self) -> str:
        return self.due_shard_base(0)

    def due_shard_base(self, shard: int) -> str:
        """The due set's shard `shard` (DUE_SET_SHARDS, service/state/due_set.py). One hash tag per
        shard for its three sorted sets, since its scripts touch all three; a tag of its own per
        shard so that a cluster spreads the shards over its nodes. Shard 0 keeps the name the
        unsharded set always had, so a deployment with one shard reads what it wrote before."""
        shard = int(shard)
        if shard < 0:
            raise ValueError(f"a due-set shard is a non-negative number, got {shard}")
        return f"{self.prefix}{{due}}" if shard == 0 else f"{self.prefix}{{due:{shard}}}"

    def store(self, merchant_id: int) -> "StoreKeys":
        return StoreKeys(self.prefix, int(merchant_id))

    def intake(self, merchant_id: int, digest: str) -> tuple[str, str, str]:
        """A webhook's keys, (seen:<digest>, inbox, inbox:nudged) of its store, as StoreKeys names
        them: the three alone, since the webhook path would build a StoreKeys' every name for them."""
        base = f"{self.prefix}{{store:{int(merchant_id)}}}:"
        return f"{base}seen:{digest}", base + "inbox", base + "inbox:nudged"


class StoreKeys:
    """The keys of one store. Attributes for the store-wide ones, methods for per-customer ones."""

    def __init__(self, prefix: str, merchant_id: int):
        self.merchant_id = merchant_id
        self.base = f"{prefix}{{store:{merchant_id}}}:"
        b = self.base
        self.state = b + "state"
        self.config = b + "config"
        self.counters = b + "counters"
        self.stats = b + "stats"
        self.holdout = b + "holdout"  # the holdout's running sums per group and stage (service/state/holdout.py)
        self.tokens = b + "tokens"
        self.token_lock = b + "token-lock"
        self.app_event_at = b + "app-event-at"
        self.no_loyalty = b + "no-loyalty"
        self.loyalty_ok = b + "loyalty-ok"
        self.blocked_until = b + "blocked-until"
        self.budget_plan = b + "budget:plan"
        self.budget_customer = b + "budget:customer"
        self.pending = b + "pending"
        self.inflight = b + "inflight"
        self.pages = b + "pages"
        self.attempts = b + "attempts"
        self.pump = b + "pump"
        self.dead = b + "dead"
        self.inbox = b + "inbox"
        self.inbox_nudged = b + "inbox:nudged"  # a drain was published for an inbox nobody drained
        self.correlation = b + "correlation"  # customer id -> correlation id of the webhook that asked for the read
        self.statuses = b + "statuses"  # per channel: sent, delivered, read, failed:<reason>
        self.channels = b + "channels"  # the store's channel settings, Fernet-encrypted JSON
        self.templates = b + "templates"  # the store's message template overrides, by name
        self.app_settings = b + "app-settings"  # the last app-settings form applied: when, rejected fields
        self.backfill = b + "backfill"  # the backfill's cursor and progress (workers/backfill.py)
        self.backfill_pending = b + "backfill:pending"  # customers listed, waiting for a low-priority read
        self.backfill_seen = b + "backfill:seen"  # customers queued in this backfill run: none twice
        self.backfill_reading = b + "backfill:reading"  # backfill reads handed out, not yet finished
        self.backfill_listing = b + "backfill:listing"  # lock: one page of GET /customers at a time
        self.read_at = b + "read-at"  # customer -> time of their last read (resync, retention)
        self.erasures = b + "erasures"  # tombstones of customers forgotten: when, how many keys; no id
        # Opted-out customers, as HMACs of store + customer id / mobile / e-mail (service/domain/suppression.py):
        # kept through forget, retention and uninstall, so that an opt-out outlives the profile.
        self.suppressed = b + "suppressed"

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern of every key of this store (`{` and `}` are not glob characters)."""
        return self.base + "*"

    @property
    def kept_after_uninstall(self) -> tuple[str, ...]:
        return tuple(self.base + name for name in KEPT_AFTER_UNINSTALL)

    def seen(self, digest: str) -> str:
        return f"{self.base}seen:{digest}"

    def profile(self, customer_id: int) -> str:
        return f"{self.base}customer:{customer_id}"

    def lots(self, customer_id: int) -> str:
        return f"{self.base}lots:{customer_id}"

    def marks(self, customer_id: int) -> str:
        return f"{self.base}marks:{customer_id}"

    def recheck(self, customer_id: int) -> str:
        return f"{self.base}recheck:{customer_id}"

    def reminder(self, reminder_id: str) -> str:
        return f"{self.base}reminder:{reminder_id}"

    def provider_message(self, channel: str, message_id: str) -> str:
        """A provider's message id -> the reminder it carried (status callbacks find it here)."""
        return f"{self.base}msgid:{channel}:{message_id}"

    def week(self, label: str) -> str:
        """Counters of one ISO week (`2026-W49`), per stage (service/state/store_figures.py)."""
        return f"{self.base}week:{label}"

    def month(self, label: str) -> str:
        return f"{self.base}month:{label}"

    def reached(self, label: str) -> str:
        """The month's shoppers reached, as a HyperLogLog of customer ids: a count, not a list."""
        return f"{self.base}reached:{label}"

    @property
    def recent(self) -> str:
        """The ids of the store's latest reminders sent, newest first (the records hold the rest)."""
        return f"{self.base}recent"

    def customer_keys(self, customer_id: int) -> tuple[str, ...]:
        """Everything kept about one customer (export and erasure walk this list)."""
        return (self.profile(customer_id), self.lots(customer_id), self.marks(customer_id),
                self.recheck(customer_id))
