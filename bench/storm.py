"""Install storm: do event-driven reads keep their latency while 200 stores backfill at once?

    .venv/bin/python bench/storm.py [--stores 200] [--customers 60] [--rate 10] [--baseline-seconds 30]
                                    [--latency-ms 50] [--debounce 0.2] [--max-stores 100] [--max-reads 4]

Issue 18, goal 4. The Procfile's `intake` and `reads` workers and beat, the web app, a Redis of
the benchmark's own, and the sandbox with `--stores` stores, each with its own tokens and its
own Salla budget (Salla's: 120 requests a minute, 500 per 10 minutes) and `--customers`
customers to list and read, answering each request after `--latency-ms`.

1. Install: every store's tokens arrive by app.store.authorize (BACKFILL_ON_AUTHORIZE=off, so
   that nothing is read yet).
2. No storm: `--rate` order.created webhooks a second, spread over the stores, each for a
   customer of its own, for `--baseline-seconds`. Each one's latency is from the webhook's POST
   to the end of its read (the customer's `read-at` time the worker writes).
3. Storm: every store's backfill starts at once (what `store_authorized` does after each
   install, here through POST /admin/stores/M/backfill), and the same webhooks go on at the same
   rate until every backfill is done.
The sandbox runs in a process of its own (`python -m devkit.sandbox`), set up over its control API.
It prints p50/p99 of both, the ratio of the p99s (goal: at most 2), how many backfills finished,
the most stores backfilling at once (BACKFILL_MAX_STORES = `--max-stores`), the most fleet-wide
backfill read places taken at once (BACKFILL_MAX_READS = `--max-reads`) and Salla's 429s.
`--debounce` is SYNC_DEBOUNCE_SECONDS: short by default, so that the figure is the queueing and
not the 3 s wait for a burst that the default adds to both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from bench.workers import percentile, procfile_command, worker  # noqa: E402
from devkit.processes import ManagedProcess, celery_beat  # noqa: E402
from devkit.procfile import process_env  # noqa: E402
from devkit.redis_server import RedisServer, free_port  # noqa: E402
from service.state.keys import Keys  # noqa: E402
from service.config.settings import Settings  # noqa: E402
from service.domain.signatures import sign  # noqa: E402

SECRET = "bench-webhook-secret"
TOKEN_KEY = "YmVuY2gtb25seS1rZXktZG8tbm90LXVzZS1pdCEhISE="
ADMIN_TOKEN = "bench-admin-token-0123456789-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FIRST_MERCHANT, FIRST_CUSTOMER, EVENT_CUSTOMER = 2_000_000, 400_000, 5_000_000
SAMPLE = json.loads((ROOT / "tests/fixtures/salla/samples/order.created.json").read_text())


def post(web_url: str, payload: dict) -> requests.Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return requests.post(web_url + "/webhooks/salla", data=body, timeout=10,
                         headers={"Content-Type": "application/json", "X-Salla-Signature": sign(body, SECRET)})


def authorize(web_url: str, sandbox_url: str, merchant: int) -> None:
    view = requests.get(f"{sandbox_url}/_sandbox/stores/{merchant}", timeout=5).json()
    answer = post(web_url, {"event": "app.store.authorize", "merchant": merchant, "created_at": "2026-11-25 10:00:00",
                            "data": {"access_token": view["access_token"], "refresh_token": view["refresh_token"],
                                     "expires": view["access_expires_at"], "scope": view["scope"],
                                     "token_type": "bearer"}})
    answer.raise_for_status()


def order(web_url: str, merchant: int, customer: int) -> float:
    body = json.loads(json.dumps(SAMPLE))
    body["merchant"], body["data"]["id"], body["data"]["customer"]["id"] = merchant, customer, customer
    sent = time.time()
    post(web_url, body).raise_for_status()
    return sent


class Events:
    """Webhooks at a steady rate, round robin over the stores, each for a new customer."""

    def __init__(self, web_url: str, merchants: list[int], rate: float):
        self.web_url, self.merchants, self.rate = web_url, merchants, rate
        self.sent: dict[tuple[int, int], float] = {}
        self.next_customer = EVENT_CUSTOMER

    def run(self, until) -> dict[tuple[int, int], float]:
        batch: dict[tuple[int, int], float] = {}
        started = time.monotonic()
        while not until():
            merchant = self.merchants[(self.next_customer - EVENT_CUSTOMER) % len(self.merchants)]
            batch[(merchant, self.next_customer)] = order(self.web_url, merchant, self.next_customer)
            self.next_customer += 1
            pause = started + len(batch) / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.sent.update(batch)
        return batch


def latencies(client: redis.Redis, keys: Keys, sent: dict[tuple[int, int], float], timeout: float) -> list[float]:
    """Webhook to the end of its read, per event, waiting up to `timeout` for the last reads."""
    deadline = time.monotonic() + timeout
    while True:
        pipe = client.pipeline(transaction=False)
        for merchant, customer in sent:
            pipe.zscore(keys.store(merchant).read_at, customer)
        read = pipe.execute()
        if all(r is not None for r in read) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = sum(r is None for r in read)
    if missing:
        print(f"  {missing} of {len(sent)} events not read within {timeout:.0f}s", flush=True)
    return [at - sent_at for (at, sent_at) in zip(read, sent.values()) if at is not None]


def summary(values: list[float]) -> dict:
    return {"events": len(values), "p50_s": round(percentile(values, 0.5), 3), "p99_s": round(percentile(values, 0.99), 3),
            "max_s": round(max(values), 3) if values else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=200)
    parser.add_argument("--customers", type=int, default=60, help="customers of each store to backfill")
    parser.add_argument("--rate", type=float, default=10, help="webhooks a second, in both phases")
    parser.add_argument("--baseline-seconds", type=float, default=30)
    parser.add_argument("--latency-ms", type=float, default=50, help="the sandbox's answer time")
    parser.add_argument("--debounce", default="0.2", help="SYNC_DEBOUNCE_SECONDS")
    parser.add_argument("--max-stores", default=None, help="BACKFILL_MAX_STORES (default: the setting's default)")
    parser.add_argument("--max-reads", default=None, help="BACKFILL_MAX_READS (default: the setting's default)")
    parser.add_argument("--timeout", type=float, default=1800, help="longest the storm may take")
    args = parser.parse_args(argv)
    merchants = [FIRST_MERCHANT + n for n in range(args.stores)]
    with tempfile.TemporaryDirectory(prefix="lpr-storm-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis", appendonly=False).start()
        client = redis.Redis.from_url(server.url)
        keys = Keys("lpr:")
        # The sandbox in a process of its own, as Salla is: its answer time must not grow with
        # this process's own work (sending webhooks, polling), which shares one interpreter lock.
        sandbox_port = free_port()
        sandbox = ManagedProcess([sys.executable, "-m", "devkit.sandbox", "--port", str(sandbox_port),
                                  "--token", "bench-default-store-token"], process_env({**os.environ, "PYTHONPATH": str(ROOT)}),
                                 workdir / "sandbox.log", ready_text="Salla sandbox at").start(wait_seconds=60)
        sandbox.url = f"http://127.0.0.1:{sandbox_port}"
        for merchant in merchants:
            requests.put(f"{sandbox.url}/_sandbox/stores/{merchant}", timeout=10, json={
                "access_token": f"access-{merchant}", "refresh_token": f"refresh-{merchant}",
                "limits": True}).raise_for_status()
        requests.put(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": args.latency_ms}, timeout=10).raise_for_status()
        requests.put(f"{sandbox.url}/_sandbox/customers/seed", timeout=30,
                     json={"count": args.customers, "start_id": FIRST_CUSTOMER, "lots_every": 0}).raise_for_status()
        env = process_env({k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REDIS_", "CELERY_"))})
        env.update({"REDIS_URL": server.url, "SALLA_WEBHOOK_SECRET": SECRET, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
                    "SALLA_API_BASE_URL": sandbox.url, "SALLA_ACCOUNTS_URL": sandbox.url,
                    "SALLA_CLIENT_ID": "sandbox-client", "SALLA_CLIENT_SECRET": "sandbox-client-secret",
                    "SYNC_DEBOUNCE_SECONDS": args.debounce, "REMINDER_CHANNELS": "log", "QUIET_HOURS": "off",
                    "BACKFILL_ON_AUTHORIZE": "off", "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "INFO",
                    "PYTHONPATH": str(ROOT)})
        if args.max_stores:
            env["BACKFILL_MAX_STORES"] = args.max_stores
        if args.max_reads:
            env["BACKFILL_MAX_READS"] = args.max_reads
        settings = Settings.from_env(env)
        # The Procfile's web (gunicorn) in a process of its own, as deployed.
        port = free_port()
        env.update({"PORT": str(port), "BIND_ADDRESS": "127.0.0.1"})
        web = SimpleNamespace(url=f"http://127.0.0.1:{port}")
        processes = [ManagedProcess(["sh", "-c", procfile_command("web")], env, workdir / "web.log",
                                    ready_text="Booting worker")]
        processes += [worker(procfile_command(name), env, workdir / f"{name}.log") for name in ("intake", "reads")]
        processes.append(celery_beat(env, workdir / "beat.log", workdir / "beat-schedule"))
        try:
            for process in processes:
                process.start(wait_seconds=90)
            print(f"{args.stores} stores of {args.customers} customers, each with Salla's budget; sandbox "
                  f"{args.latency_ms:.0f} ms; {args.rate:.0f} webhooks/s; SYNC_DEBOUNCE_SECONDS={args.debounce}; "
                  f"BACKFILL_MAX_STORES={settings.backfill_max_stores}; BACKFILL_MAX_READS={settings.backfill_max_reads}",
                  flush=True)
            for merchant in merchants:
                authorize(web.url, sandbox.url, merchant)
            deadline = time.monotonic() + 120
            while sum(client.exists(keys.store(m).tokens) for m in merchants) < len(merchants):
                if time.monotonic() > deadline:
                    raise RuntimeError("the stores' tokens were not stored within 120 s")
                time.sleep(0.5)

            events = Events(web.url, merchants, args.rate)
            end = time.monotonic() + args.baseline_seconds
            quiet = events.run(lambda: time.monotonic() > end)
            quiet_figures = summary(latencies(client, keys, quiet, 60))
            print(f"no storm: {json.dumps(quiet_figures)}", flush=True)

            started = time.monotonic()
            for merchant in merchants:
                requests.post(f"{web.url}/admin/stores/{merchant}/backfill", headers=ADMIN, timeout=10).raise_for_status()
            most = most_reads = 0

            def storm_over() -> bool:
                nonlocal most, most_reads
                fleet = requests.get(f"{web.url}/admin/backfills", headers=ADMIN, timeout=10).json()
                most = max(most, len(fleet["running"]))
                most_reads = max(most_reads, client.zcount(keys.backfill_reads, f"({time.time():.6f}", "+inf"))
                if time.monotonic() - started > args.timeout:
                    return True
                return not fleet["running"] and not fleet["queued_total"]
            storm = events.run(storm_over)
            storm_seconds = time.monotonic() - started
            storm_figures = summary(latencies(client, keys, storm, 120))
            print(f"storm:    {json.dumps(storm_figures)}", flush=True)
            # Is the tail the storm's first seconds (every slot handed out at once) or all along?
            wall_start = time.time() - (time.monotonic() - started)
            for first, last in ((0, 10), (10, storm_seconds)):
                window = {key: at for key, at in storm.items() if first <= at - wall_start < last}
                if window:
                    print(f"  storm seconds {first:.0f}-{last:.0f}: {json.dumps(summary(latencies(client, keys, window, 5)))}",
                          flush=True)

            states = {}
            for merchant in merchants:
                view = requests.get(f"{web.url}/admin/stores/{merchant}/backfill", headers=ADMIN, timeout=10).json()
                states[merchant] = view["backfill"]
            # Where the tail is: the slowest 1 % of the storm's events, by what their store was doing
            # when the webhook came (queued for a slot, backfilling, done) and when in the storm.
            read_at = latencies(client, keys, storm, 5)
            timed = sorted(((lat, key) for lat, key in zip(read_at, storm)), reverse=True)
            tail = timed[:max(1, len(timed) // 100)]

            def phase(merchant: int, at: float) -> str:
                view = states[merchant]
                if view.get("started_at") and at < view["started_at"]:
                    return "queued"
                if view.get("finished_at") and at >= view["finished_at"]:
                    return "done"
                return "backfilling"
            by_phase: dict[str, int] = {}
            for _, (merchant, customer) in tail:
                name = phase(merchant, storm[(merchant, customer)])
                by_phase[name] = by_phase.get(name, 0) + 1
            print(f"  slowest {len(tail)} storm events (from {tail[-1][0]:.3f}s): by their store's phase "
                  f"{json.dumps(by_phase)}; at storm seconds "
                  f"{sorted(round(storm[key] - wall_start) for _, key in tail)}", flush=True)
            # An event-driven read of a customer the backfill had not listed yet covers them too.
            done = sum(v["state"] == "done" and v["reads_failed"] == 0
                       and v["customers_read"] + v["covered_by_events"] >= args.customers for v in states.values())
            stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()
            ratio = storm_figures["p99_s"] / quiet_figures["p99_s"]
            result = {"stores": args.stores, "customers_per_store": args.customers, "rate_per_s": args.rate,
                      "backfill_max_stores": settings.backfill_max_stores, "most_backfilling_at_once": most,
                      "backfill_max_reads": settings.backfill_max_reads, "most_backfill_reads_at_once": most_reads,
                      "no_storm": quiet_figures, "storm": storm_figures, "p99_ratio": round(ratio, 2),
                      "storm_seconds": round(storm_seconds, 1), "backfills_done": done,
                      "salla_requests": stats["requests"], "salla_429": stats["by_status"].get("429", 0)}
            print(json.dumps(result, indent=2))
            print(f"p99 webhook -> read: {quiet_figures['p99_s']:.3f}s without a storm, {storm_figures['p99_s']:.3f}s "
                  f"during it: {ratio:.2f}x (goal <= 2); backfills done {done}/{args.stores} in {storm_seconds:.0f}s")
            return 0 if ratio <= 2 and done == args.stores else 1
        finally:
            for process in processes:
                process.stop()
            sandbox.stop()
            client.close()
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
