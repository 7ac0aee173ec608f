"""Redis memory per customer and per store, for the capacity model.

    .venv/bin/python bench/memory.py [--customers 10000] [--lots 3] [--redis-url redis://127.0.0.1:6379/13]

Loads `--customers` customers of one store through the service's own code: the webhook's
intake (`Intake.accept`: the `seen:` key and the inbox entry), the profile (`Profiles.save`),
then a read's aftermath (`reminding.after_read`: the lots, kept in the profile, the marks, the ledger records of the
reminders it queues, the due-set timers and the next stages' wake-ups), each reminder
delivered by the log channel (`delivery.deliver`: marked sent, counted). Each customer has
`--lots` lots: one expiring in 3 days (a stage-7 reminder goes out), one in 20 days (stage 30),
the rest later (a wake-up waits in the due set).

Then it prints MEMORY USAGE (SAMPLES 0: exact for hashes and sorted sets) summed per kind of
key, per customer and for the store, beside the change in INFO used_memory. Without
--redis-url it starts a throwaway redis-server, so that used_memory counts only this load;
with one, it writes under a key prefix of its own (on a shared server used_memory also moves
with other clients). Either way every key it wrote is deleted at the end, even on Ctrl-C. The
prefix is as long as the default REDIS_KEY_PREFIX (`lpr:`): key names are part of the figure.

The intake's two keys are what a burst leaves while it waits: the inbox entry goes when the
event is handled, the `seen:` key after WEBHOOK_DEDUPE_TTL_SECONDS (a day). The steady state
per customer is the rest: INFO's figure for it is taken again once the intake's keys are gone.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
import requests  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from devkit.redis_server import RedisServer  # noqa: E402
from devkit.sandbox_seed import lot_row  # noqa: E402
from service.domain.events import Customer  # noqa: E402
from service.domain.loyalty import parse_history  # noqa: E402
from service.config.settings import Settings  # noqa: E402
from workers import delivery, reminding  # noqa: E402
from service.ops.runtime import build_runtime  # noqa: E402

MERCHANT = 1305146709
# Kinds of key, by the part after the store's `{store:M}:` (service/state/keys.py).
# The last read's lots are fields of the profile (service/state/last_read.py); `lots:` only for a
# read that would not fit a listpack there.
STEADY = ("profile+lots", "lots", "marks", "ledger", "due set", "store-wide")
KIND_OF = {"customer": "profile+lots", "lots": "lots", "marks": "marks", "reminder": "ledger", "seen": "intake seen",
           "inbox": "intake inbox", "recheck": "recheck"}


def kind(key: str, prefix: str) -> str:
    rest = key[len(prefix):]
    if rest.startswith("{due}") or rest.startswith("{due:"):  # shard 0, shards 1.. (DUE_SET_SHARDS)
        return "due set"
    if not rest.startswith("{store:"):
        return "shared"  # `stores`, alarms
    name = rest.split("}:", 1)[1]
    return KIND_OF.get(name.split(":", 1)[0], "store-wide")


def settings_for(url: str, prefix: str) -> Settings:
    return Settings.from_env({
        "REDIS_URL": url, "REDIS_KEY_PREFIX": prefix, "SALLA_WEBHOOK_SECRET": "bench",
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "SALLA_ACCESS_TOKEN": "bench",
        "QUIET_HOURS": "off", "REMINDER_CHANNELS": "log", "REMINDER_LANGUAGE": "ar",
    })


def history(customer_id: int, lots: int, now: datetime) -> list[dict]:
    days = [3, 20] + [120 + 30 * i for i in range(max(lots - 2, 0))]
    return [lot_row(100 + customer_id % 400, 0, now + timedelta(days=d), now - timedelta(days=200),
                    order_id=str(2_100_000_000 + customer_id * 10 + i)) for i, d in enumerate(days[:lots])]


def load(rt, customers: int, lots: int) -> None:
    now = datetime.now(timezone.utc)
    moment = now.timestamp()
    ttl = rt.settings.webhook_dedupe_ttl_seconds
    for index in range(customers):
        c = 500_000_000 + index
        customer = Customer(id=c, name=f"محمد {index}", mobile=f"+9665{index:08d}", email=f"shopper{index}@example.com",
                            notifications_enabled=True, lang="ar")
        message = {"event": "order.created", "merchant_id": MERCHANT, "customer": customer.to_dict(),
                   "event_created_at": now.isoformat(), "received_at": now.isoformat()}
        rt.intake.accept(MERCHANT, hashlib.sha256(f"{c}".encode()).hexdigest(), message, ttl, moment)
        rt.profiles.save(MERCHANT, customer)
        parsed, problems = parse_history(history(c, lots, now), rt.settings.store_timezone)
        assert not problems, problems
        reminding.after_read(rt, MERCHANT, customer, parsed, now,
                             lambda m, cc, rid: delivery.deliver(rt, m, cc, rid, moment))


def free_prefix(client: redis.Redis) -> str:
    """A prefix of the default's length that no key of the shared server starts with."""
    for _ in range(100):
        prefix = f"b{uuid.uuid4().hex[:2]}:"
        if next(client.scan_iter(match=prefix + "*", count=1000), None) is None:
            return prefix
    raise SystemExit("no free key prefix of 4 characters on that server")


def measure(client: redis.Redis, prefix: str) -> dict[str, list[int]]:
    sizes: dict[str, list[int]] = defaultdict(list)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        sizes[kind(key, prefix)].append(int(client.memory_usage(key, samples=0) or 0))
    return sizes


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def report(sizes: dict[str, list[int]], customers: int, delta: int, seconds: float, steady_delta: int) -> str:
    lines = [f"{customers:,} customers of one store loaded in {seconds:.1f}s", "",
             f"{'kind of key':<14} {'keys':>8} {'bytes':>12} {'per customer':>13}"]
    total = steady = 0
    for name in sorted(sizes, key=lambda n: -sum(sizes[n])):
        amount = sum(sizes[name])
        total += amount
        steady += amount if name in STEADY else 0
        lines.append(f"{name:<14} {len(sizes[name]):>8,} {amount:>12,} {amount / customers:>13,.0f}")
    lines += ["",
              f"MEMORY USAGE, all keys:        {total / customers:>8,.0f} B per customer, {total / 2**20:,.1f} MiB for the store",
              f"  without intake and recheck:  {steady / customers:>8,.0f} B per customer, {steady / 2**20:,.1f} MiB for the store",
              f"INFO used_memory delta:        {delta / customers:>8,.0f} B per customer, {delta / 2**20:,.1f} MiB for the store",
              f"  once the intake's keys went: {steady_delta / customers:>8,.0f} B per customer, {steady_delta / 2**20:,.1f} MiB for the store"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--lots", type=int, default=3, help="lots per customer (at least 1)")
    parser.add_argument("--redis-url", help="an existing Redis (a key prefix of its own); default: a throwaway one")
    args = parser.parse_args(argv)
    if args.customers < 1 or args.lots < 1:
        parser.error("--customers and --lots must be at least 1")
    logging.disable(logging.INFO)  # the log channel would print every reminder
    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.redis_url else RedisServer(Path(tmp), appendonly=False).start()
        url = args.redis_url or server.url
        client = redis.Redis.from_url(url, decode_responses=True)
        prefix = "lpr:" if server else free_prefix(client)
        rt = build_runtime(settings_for(url, prefix), redis.Redis.from_url(url, decode_responses=True),
                           requests.Session())
        try:
            before = used_memory(client)
            started = time.monotonic()
            load(rt, args.customers, args.lots)
            seconds = time.monotonic() - started
            delta = used_memory(client) - before
            sizes = measure(client, prefix)
            intake = [key for key in client.scan_iter(match=prefix + "*", count=1000)
                      if kind(key, prefix).startswith("intake")]
            for start in range(0, len(intake), 500):
                client.delete(*intake[start:start + 500])
            steady_delta = used_memory(client) - before
            print(report(sizes, args.customers, delta, seconds, steady_delta))
        finally:
            doomed = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(doomed), 500):
                client.unlink(*doomed[start:start + 500])
            client.close()
            if server:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
