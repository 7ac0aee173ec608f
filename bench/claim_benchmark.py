"""Claim throughput and memory of the due set, against a bare ZRANGEBYSCORE + ZREM loop.

    .venv/bin/python bench/claim_benchmark.py [--redis-url redis://127.0.0.1:6379/13]
                                               [--count 1000000] [--batch 1000]

Schedules --count reminders (all already due) under a key prefix of its own, measures Redis
memory per reminder, then drains the set with `DueSet.claim` and an identical copy with the
baseline loop, in the same run, and prints claims/second for both and their ratio. Every key it
wrote is deleted at the end, also when interrupted. Needs Redis 6.2+ (COPY, ZADD LT).

    .venv/bin/python bench/claim_benchmark.py --scale [--count 10000000] [--shards 1,16] [--claims 1000000]

How the claim rate holds at fleet size (issue 18, goal 5): for each DUE_SET_SHARDS value in turn,
--count entries are scheduled (streamed, a chunk at a time) into an empty throwaway redis-server
on a free port, then --claims entries are claimed and acked the way the sweep does, while the set
still holds ~--count. Prints each figure against the first (1-shard) one of the same run.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit.redis_server import RedisServer  # noqa: E402
from service.state.due_set import DueEntry, DueSet  # noqa: E402

TARGET_CLAIMS_PER_SECOND = 20_000
TARGET_BYTES_PER_REMINDER = 300
STAGES = (30, 7, 1)
SCRIPT_COMMANDS = ("evalsha", "eval")
BASELINE_COMMANDS = ("zrangebyscore", "zrem")


def make_entries(count: int, seed: int) -> list[tuple[float, DueEntry]]:
    """Realistic ids: Salla merchant and customer ids are 9-10 digits; a few thousand stores."""
    rng = random.Random(seed)
    merchants = [rng.randrange(10**9, 2 * 10**9) for _ in range(max(1, count // 500))]
    now = time.time()
    return [(now - rng.uniform(0, 86_400),
             DueEntry(rng.choice(merchants), rng.randrange(10**8, 3 * 10**9), STAGES[i % 3],
                      format(rng.getrandbits(48), "012x")))
            for i in range(count)]


def stream_entries(count: int, seed: int, chunk: int):
    """`make_entries` a chunk at a time: ten million entries as one list would take gigabytes of
    Python memory on top of Redis's. Merchants as there: about one per 500 entries."""
    rng = random.Random(seed)
    merchants = [rng.randrange(10**9, 2 * 10**9) for _ in range(max(1, count // 500))]
    now = time.time()
    for start in range(0, count, chunk):
        yield [(now - rng.uniform(0, 86_400),
                DueEntry(rng.choice(merchants), rng.randrange(10**8, 3 * 10**9), STAGES[i % 3],
                         format(rng.getrandbits(48), "012x")))
               for i in range(start, min(start + chunk, count))]


def scale_run(args) -> int:
    """Claim rate at --count entries, per number of shards, each in a fresh throwaway Redis."""
    shard_counts = [int(n) for n in args.shards.split(",")]
    rows = []
    for shards in shard_counts:
        with tempfile.TemporaryDirectory() as tmp:
            server = RedisServer(Path(tmp), appendonly=False).start()
            client = redis.Redis.from_url(server.url)
            try:
                due = DueSet(client, "bench-scale:", batch=args.batch, shards=shards)
                started = time.perf_counter()
                for chunk in stream_entries(args.count, args.seed, args.schedule_batch):
                    due.schedule(chunk)
                scheduled, seconds = due.pending_count(), time.perf_counter() - started
                used = client.info("memory")["used_memory"]
                print(f"shards {shards:>3}: scheduled {scheduled:,} in {seconds:.0f}s; Redis used_memory "
                      f"{used / 2**30:.2f} GiB ({used / scheduled:.0f} B per entry)", flush=True)
                now = time.time() + 1
                claimed = claim_seconds = ack_seconds = 0.0
                busy = redis_busy_usec(client, SCRIPT_COMMANDS)
                while claimed < args.claims:
                    t0 = time.perf_counter()
                    entries = due.claim(now, args.batch)
                    t1 = time.perf_counter()
                    due.ack(entries)
                    claim_seconds += t1 - t0
                    ack_seconds += time.perf_counter() - t1
                    claimed += len(entries)
                    if not entries:
                        break
                busy = (redis_busy_usec(client, SCRIPT_COMMANDS) - busy) / claimed
                rows.append((shards, scheduled, claimed, claimed / claim_seconds,
                             claimed / (claim_seconds + ack_seconds), busy))
                print(f"shards {shards:>3}: claimed {claimed:,.0f} of {scheduled:,} in {claim_seconds:.1f}s = "
                      f"{claimed / claim_seconds:,.0f} claims/s; claim + ack {claimed / (claim_seconds + ack_seconds):,.0f}/s;"
                      f" Redis busy {busy:.2f} us per entry", flush=True)
            finally:
                client.close()
                server.stop()
    first = rows[0]
    print(f"\n{'shards':>6} {'entries':>12} {'claims/s':>10} {'claim+ack/s':>12} {'us/entry':>9} {'vs ' + str(first[0]) + ' shard':>10}")
    for shards, scheduled, _, rate, lifecycle, busy in rows:
        print(f"{shards:>6} {scheduled:>12,} {rate:>10,.0f} {lifecycle:>12,.0f} {busy:>9.2f} {rate / first[3]:>10.2f}")
    ok = all(rate >= TARGET_CLAIMS_PER_SECOND for _, _, _, rate, _, _ in rows)
    print(f"target claims/s >= {TARGET_CLAIMS_PER_SECOND:,} at every shard count: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def schedule(due: DueSet, entries: list[tuple[float, DueEntry]], chunk: int) -> float:
    """`DueSet.schedule` sends its scripts (one per `due.batch` entries) in one pipeline."""
    started = time.perf_counter()
    for start in range(0, len(entries), chunk):
        due.schedule(entries[start:start + chunk])
    return time.perf_counter() - started


def redis_busy_usec(client: redis.Redis, commands: tuple[str, ...]) -> int:
    """Time Redis spent in these top-level commands so far (INFO commandstats). A script blocks
    every other client while it runs, so this is the cost the sweep puts on the server. (The
    commands a script calls are counted again under their own names, hence the explicit list.)"""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{command}", {}).get("usec", 0) for command in commands)


def memory_usage(client: redis.Redis, keys) -> int:
    return sum(client.memory_usage(key, samples=0) or 0 for key in keys)


def drain_ours(due: DueSet, now: float, batch: int) -> tuple[int, float, float]:
    """Claims a batch and acks it, as a sweeper does, until nothing is due.
    Returns (claimed, seconds in claim, seconds in ack)."""
    claimed, claim_seconds, ack_seconds = 0, 0.0, 0.0
    while True:
        started = time.perf_counter()
        entries = due.claim(now, batch)
        claimed_at = time.perf_counter()
        claim_seconds += claimed_at - started
        if not entries:
            return claimed, claim_seconds, ack_seconds
        due.ack(entries)
        ack_seconds += time.perf_counter() - claimed_at
        claimed += len(entries)


def drain_baseline(client: redis.Redis, key: str, now: float, batch: int) -> tuple[int, float]:
    """What a sweeper without a script does: read a page, delete it (two round trips, and two
    sweepers could both read the same page). Members are decoded too, as a sweeper must."""
    claimed = 0
    started = time.perf_counter()
    while members := client.zrangebyscore(key, "-inf", now, start=0, num=batch):
        client.zrem(key, *members)
        claimed += len([DueEntry.decode(member) for member in members])
    return claimed, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="entries per claim")
    parser.add_argument("--schedule-batch", type=int, default=20_000, help="entries per schedule call "
                        "(one pipelined round trip of scripts of --batch entries each)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", action="store_true", help="claim rate at --count entries per --shards, "
                        "each in a throwaway redis-server")
    parser.add_argument("--shards", default="1,16", help="with --scale: DUE_SET_SHARDS values, the first is the baseline")
    parser.add_argument("--claims", type=int, default=1_000_000, help="with --scale: entries claimed and acked per run")
    args = parser.parse_args(argv)
    if args.scale:
        return scale_run(args)

    client = redis.Redis.from_url(args.redis_url)
    prefix = f"bench-claim-{uuid.uuid4().hex[:8]}:"
    due = DueSet(client, prefix, batch=args.batch)
    baseline_key = f"{prefix}baseline"
    written = [*due.keys, baseline_key]
    info = client.info("server")
    print(f"redis {info['redis_version']} at {args.redis_url}, prefix {prefix!r}, "
          f"count {args.count:,}, claim batch {args.batch:,}")
    try:
        started = time.perf_counter()
        entries = make_entries(args.count, args.seed)
        print(f"generated entries in {time.perf_counter() - started:.1f}s")

        before = client.info("memory")["used_memory"]
        seconds = schedule(due, entries, args.schedule_batch)
        after = client.info("memory")["used_memory"]
        scheduled = due.pending_count()
        print(f"scheduled {scheduled:,} in {seconds:.1f}s ({scheduled / seconds:,.0f}/s, pipelined)")
        del entries

        by_key = {key: memory_usage(client, [key]) for key in due.keys}
        per_reminder = sum(by_key.values()) / scheduled
        delta = (after - before) / scheduled
        print("memory per scheduled reminder:")
        for key, used in by_key.items():
            print(f"  MEMORY USAGE {key.removeprefix(prefix):<20} {used / scheduled:7.1f} B")
        print(f"  MEMORY USAGE, all keys         {per_reminder:7.1f} B   (target <= {TARGET_BYTES_PER_REMINDER})")
        print(f"  INFO used_memory delta         {delta:7.1f} B   (whole server: other clients count too)")

        client.copy(due.scheduled_key, baseline_key)
        now = time.time() + 1

        busy = redis_busy_usec(client, SCRIPT_COMMANDS)
        claimed, claim_seconds, ack_seconds = drain_ours(due, now, args.batch)
        our_busy = (redis_busy_usec(client, SCRIPT_COMMANDS) - busy) / claimed
        ours = claimed / claim_seconds
        lifecycle = claimed / (claim_seconds + ack_seconds)
        print(f"DueSet.claim:                {claimed:,} in {claim_seconds:.1f}s = {ours:,.0f} claims/s "
              f"(target >= {TARGET_CLAIMS_PER_SECOND:,})")
        print(f"DueSet.claim + ack:          {claimed:,} in {claim_seconds + ack_seconds:.1f}s = {lifecycle:,.0f}/s, "
              f"Redis busy {our_busy:.2f} us per entry")
        assert claimed == scheduled, f"claimed {claimed:,} of {scheduled:,}"
        assert due.pending_count() == due.processing_count() == client.zcard(due.index_key) == 0

        busy = redis_busy_usec(client, BASELINE_COMMANDS)
        base_claimed, base_seconds = drain_baseline(client, baseline_key, now, args.batch)
        base_busy = (redis_busy_usec(client, BASELINE_COMMANDS) - busy) / base_claimed
        baseline = base_claimed / base_seconds
        print(f"baseline ZRANGEBYSCORE+ZREM: {base_claimed:,} in {base_seconds:.1f}s = {baseline:,.0f} claims/s, "
              f"Redis busy {base_busy:.2f} us per entry")
        print(f"ratio claim / baseline:       {ours / baseline:.2f}")
        print(f"ratio claim+ack / baseline:   {lifecycle / baseline:.2f}")

        ok = ours >= TARGET_CLAIMS_PER_SECOND and per_reminder <= TARGET_BYTES_PER_REMINDER
        print(f"targets: claims/s {'met' if ours >= TARGET_CLAIMS_PER_SECOND else 'MISSED'}, "
              f"bytes/reminder {'met' if per_reminder <= TARGET_BYTES_PER_REMINDER else 'MISSED'}")
        return 0 if ok else 1
    finally:
        client.unlink(*written)  # UNLINK: freeing a million members must not block the server
        client.close()


if __name__ == "__main__":
    sys.exit(main())
