"""Do the workers keep up? The Procfile's workers against bare Celery tasks on the same pool.

    .venv/bin/python bench/workers.py [--events 3000] [--reads 600] [--latency-ms 50] [--repeat 3]

1. Events: `--events` accepted webhooks (distinct customers, 20 stores) wait in the stores'
   inboxes, with their drain tasks published, as the web leaves them. The Procfile's `intake`
   worker (its exact command) handles them: events handled per second, until every inbox is
   empty. Baseline: the same number of bare no-op Celery tasks on the same pool and
   concurrency (bench/bare_tasks.py).
2. Salla reads: `--reads` customers wait in one store's read queue (a budget that does not
   bind), and the sandbox answers each page after `--latency-ms`. The Procfile's `reads`
   worker reads them (token, every page, the plan): reads per second. Baseline: bare tasks
   that each do one GET of the sandbox on the same pool and concurrency.
3. Both for each pool: prefork with 2 and with 8 processes, and threads with 16, so the
   Procfile's choice rests on figures from the same run.
4. p50/p99 of the run time of the task that does the item (`sync_customer` against `bare.get`,
   `drain_intake` against `bare.noop`; a drain handles a batch of events), from the workers'
   own "succeeded in" log lines.
5. Deliveries (`--parts deliveries`): `--deliveries` reminders queued by a read's own code
   (`reminding.after_read`), delivered by the Procfile's `deliveries` worker (its pool and
   concurrency) through the `webhook` channel to a local receiver answering after
   `--latency-ms`. Baseline: bare tasks that POST the same signed body (made by the channel's
   own code) to the same receiver, on the same pool and concurrency (`bare.post`).
Everything on a Redis server and ports of the benchmark's own; the ratios are what to read.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from devkit.processes import ManagedProcess  # noqa: E402
from devkit.procfile import process_env, read_procfile  # noqa: E402
from devkit.redis_server import RedisServer  # noqa: E402
from devkit.sandbox import Faults, create_app as create_sandbox, serve_in_thread  # noqa: E402
from devkit.sandbox_seed import lot_row  # noqa: E402
from service.config.celery_config import DRAIN_TASK, PUMP_TASK, SYNC_TASK  # noqa: E402
from service.state.intake import Intake  # noqa: E402
from service.config.celery_config import DELIVER_TASK  # noqa: E402
from devkit.receiver import ReminderLog, create_receiver  # noqa: E402
from service.clients.channels import WebhookChannel  # noqa: E402

TOKEN = "bench-token"
TOKEN_KEY = "YmVuY2gtb25seS1rZXktZG8tbm90LXVzZS1pdCEhISE="
STORES = 20
MERCHANT = 1305146709
POOLS = {"prefork-2": ["--pool=prefork", "--concurrency=2"], "prefork-8": ["--pool=prefork", "--concurrency=8"],
         "threads-16": ["--pool=threads", "--concurrency=16"]}


def procfile_command(name: str) -> str:
    return next(e.command for e in read_procfile(ROOT / "Procfile") if e.name == name)


def with_pool(command: str, pool: str) -> str:
    """The Procfile's command with its pool and concurrency replaced by `pool`'s."""
    words = [w for w in command.split() if not w.startswith(("--pool=", "--concurrency="))]
    return " ".join(words + POOLS[pool])


def worker(command: str, env: dict, log: Path) -> ManagedProcess:
    return ManagedProcess(["sh", "-c", command], env, log, ready_text=" ready.")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in the worker's process group (the pool's children
    included), from /proc: what a task costs in CPU, whatever else the machine is doing."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measured(process: ManagedProcess, client: redis.Redis, count: int, done) -> tuple[float, float, float]:
    """(items per second, worker CPU ms per item, Redis CPU ms per item) from the moment the
    worker is ready: its queue was full before it started. Redis is the broker too here."""
    cpu_before, redis_before = group_cpu_seconds(process.process.pid), redis_cpu_seconds(client)
    seconds = wait_for(done)
    cpu = group_cpu_seconds(process.process.pid) - cpu_before
    redis_cpu = redis_cpu_seconds(client) - redis_before
    return count / seconds, 1000 * cpu / count, 1000 * redis_cpu / count


# Celery prints a very short run time in exponent form ("succeeded in 9.8e-05s").
_SUCCEEDED = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded in ([\d.]+(?:e-?\d+)?)s")


def task_seconds(log: Path, task: str) -> list[float]:
    """How long each `task` ran, from the worker's own "Task ... succeeded in Xs" lines (INFO,
    plain text or JSON): the p50/p99 a task takes on its pool, ours and bare alike."""
    return [float(seconds) for name, seconds in _SUCCEEDED.findall(log.read_text(errors="replace")) if name == task]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def wait_for(predicate, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.02)
    return time.monotonic() - started


def celery_producer(env: dict):
    from celery import Celery
    from service.config.celery_config import celery_config
    from service.config.settings import Settings
    app = Celery("bench-producer", set_as_current=False)
    app.conf.update(celery_config(Settings.from_env(env)))
    return app


def queue_length(client: redis.Redis, queue: str) -> int:
    return client.llen(queue)


def events_run(env, client, workdir, pool, count, baseline: bool) -> float:
    client.flushall()
    producer = celery_producer(env)
    if baseline:
        for n in range(count):
            producer.send_task("bare.noop", args=[MERCHANT, n], queue="bare")
        command = with_pool("celery -A bench.bare_tasks worker -Q bare -n bare@%h --loglevel=INFO", pool)
        done = lambda: queue_length(client, "bare") == 0 and not client.hlen("unacked")  # noqa: E731
    else:
        intake = Intake(client, "lpr:")
        sample = json.loads((ROOT / "tests/fixtures/salla/samples/order.created.json").read_text())
        for n in range(count):
            merchant = 1_000 + n % STORES
            event = {"event": "order.created", "merchant_id": merchant, "event_created_at": "", "received_at": "",
                     "customer": {"id": 900_000 + n, "name": "محمد", "mobile": "+966500000001", "email": None,
                                  "notifications_enabled": None}}
            if intake.accept(merchant, f"d{n}", event, 86400, time.time()) == 2:
                producer.send_task(DRAIN_TASK, args=[{"merchant_id": merchant}])
        del sample
        command = with_pool(procfile_command("intake"), pool)
        done = lambda: all(intake.waiting(1_000 + s) == 0 for s in range(STORES)) and not client.hlen("unacked")  # noqa: E731
    log = workdir / f"events-{pool}-{baseline}.log"
    process = worker(command, env, log).start(wait_seconds=60)
    try:
        result = measured(process, client, count, done)
    finally:
        process.stop()
    # Ours handles a store's events in one drain task: its time is per batch, not per event.
    return (*result, task_seconds(log, "bare.noop" if baseline else DRAIN_TASK))


def reads_run(env, client, workdir, pool, count, sandbox_url, baseline: bool) -> float:
    client.flushall()
    requests.post(sandbox_url + "/_sandbox/reset-stats", timeout=5)
    producer = celery_producer(env)
    if baseline:
        for n in range(count):
            producer.send_task("bare.get", args=[f"{sandbox_url}/customers/loyalty/points?customer_id={50_000 + n}",
                                                 TOKEN], queue="bare", headers={})
        command = with_pool("celery -A bench.bare_tasks worker -Q bare -n bare@%h --loglevel=INFO", pool)
    else:
        from service.state.budget import Budget
        budget = Budget(client, "lpr:")
        for n in range(count):
            budget.enqueue(MERCHANT, 50_000 + n, time.time())
        producer.send_task(PUMP_TASK, args=[MERCHANT])
        command = with_pool(procfile_command("reads"), pool)

    def answered() -> int:
        return requests.get(sandbox_url + "/_sandbox/stats", timeout=5).json()["requests"]
    log = workdir / f"reads-{pool}-{baseline}.log"
    process = worker(command, env, log).start(wait_seconds=60)
    try:
        result = measured(process, client, count, lambda: answered() >= count)
    finally:
        process.stop()
    return (*result, task_seconds(log, "bare.get" if baseline else SYNC_TASK))


RECEIVER_SECRET = "bench-receiver-secret"


def slowed(app, seconds: float):
    """The receiver answering after `seconds`, as a merchant's system or a provider's API would
    (a thread each: the sleep holds no lock)."""
    def answer(environ, start_response):
        time.sleep(seconds)
        return app(environ, start_response)
    return answer


class _Capture:
    """A session that keeps what the channel would POST instead of sending it."""

    def post(self, url, data=None, headers=None, **_):
        self.sent = (url, data, headers)
        return SimpleNamespace(status_code=200)


def signed_post(reminder: dict, url: str, secret: str, clock=time.time) -> tuple[str, bytes, dict]:
    """The URL, body and headers the `webhook` channel POSTs for `reminder`, made by the channel
    itself: what the baseline sends, byte for byte but for the signed timestamp."""
    capture = _Capture()
    WebhookChannel(url, secret, capture, 10.0, clock=clock).send(reminder)
    return capture.sent


def queue_reminders(env: dict, count: int) -> list[dict]:
    """`count` customers of one store, each with a lot expiring in 3 days, through a read's own
    code (`reminding.after_read`: lots, ledger record, timer): one reminder each, waiting for its
    delivery. Returns the reminders as the ledger keeps them."""
    from service.domain.events import Customer
    from service.domain.loyalty import parse_history
    from service.state.redis_client import connect
    from service.config.settings import Settings
    from workers import reminding
    from service.ops.runtime import build_runtime
    settings = Settings.from_env(dict(env, QUIET_HOURS="off"))
    rt = build_runtime(settings, connect(settings), requests.Session())
    now = datetime.now(timezone.utc)
    queued = []
    for n in range(count):
        customer = Customer(id=70_000 + n, name="محمد العتيبي", mobile=f"+9665{n:08d}", email=f"s{n}@example.com",
                            notifications_enabled=True, lang="ar")
        rt.profiles.save(MERCHANT, customer)
        lots, problems = parse_history([lot_row(150, 0, now + timedelta(days=3), now - timedelta(days=200),
                                                order_id=str(3_000_000 + n))], settings.store_timezone)
        assert not problems, problems
        reminding.after_read(rt, MERCHANT, customer, lots, now, lambda m, c, rid: queued.append((m, rid)))
    assert len(queued) == count, f"{len(queued)} reminders queued for {count} customers"
    reminders = [rt.ledger.get(m, rid).reminder for m, rid in queued]
    rt.store.close()
    return reminders


def deliveries_run(env, client, workdir, pool, reminders, latency_ms, baseline: bool) -> tuple:
    """One run: every reminder delivered (ours) or its signed body POSTed (bare), to a fresh
    receiver; checks that each arrived once with a valid signature and, for ours, is `sent`."""
    log_ = ReminderLog(RECEIVER_SECRET)
    receiver = serve_in_thread(slowed(create_receiver(log_), latency_ms / 1000))
    url = receiver.url + "/reminders"
    env = dict(env, QUIET_HOURS="off", REMINDER_CHANNELS="webhook", REMINDER_WEBHOOK_URL=url, REMINDER_WEBHOOK_SECRET=RECEIVER_SECRET)
    producer = celery_producer(env)
    command = procfile_command("deliveries")
    if pool:
        command = with_pool(command, pool)
    if baseline:
        words = [w for w in command.split() if w.startswith(("--pool=", "--concurrency="))]
        command = " ".join(["celery -A bench.bare_tasks worker -Q bare -n bare@%h --loglevel=INFO"] + words)
        for reminder in reminders:
            url_, body, headers = signed_post(reminder, url, RECEIVER_SECRET)
            producer.send_task("bare.post", args=[url_, body.decode("utf-8"), headers], queue="bare")
    else:
        for reminder in reminders:
            producer.send_task(DELIVER_TASK, args=[reminder["merchant_id"], reminder["customer_id"],
                                                   reminder["reminder_id"]])
    def states() -> set:
        pipe = ledger.redis.pipeline(transaction=False)
        for r in reminders:
            pipe.hget(ledger.keys.store(r["merchant_id"]).reminder(r["reminder_id"]), "state")
        return set(pipe.execute())

    from service.state.ledger import Ledger
    ledger = Ledger(redis.Redis.from_url(env["REDIS_URL"], decode_responses=True), "lpr:")
    # A bare POST is done when the receiver has it; a delivery when the ledger says `sent`
    # (its send recorded, its lots marked, its timer gone), which comes after the POST.
    done = (lambda: len(log_.received) >= len(reminders)) if baseline else (lambda: states() == {"sent"})
    log = workdir / f"deliveries-{pool}-{latency_ms}-{baseline}.log"
    process = worker(command, env, log).start(wait_seconds=60)
    try:
        result = measured(process, client, len(reminders), done)
    finally:
        process.stop()
        receiver.stop()
    received = log_.received
    assert len(received) == len(reminders) and all(r["signature_valid"] for r in received), \
        f"{len(received)} POSTs for {len(reminders)} reminders, or a signature that does not match"
    assert len({r["body"]["reminder_id"] for r in received}) == len(reminders), "a reminder arrived twice"
    return (*result, task_seconds(log, "bare.post" if baseline else DELIVER_TASK))


def deliveries_figures(env, client, workdir, count: int, latency_ms: float, repeat: int, pool: str | None) -> dict:
    """Ours against bare POSTs, alternated `repeat` times on the same reminders; medians."""
    runs: dict[str, list] = {"bare_posts": [], "deliveries": []}
    for _ in range(repeat):
        client.flushall()
        reminders = queue_reminders(env, count)
        runs["bare_posts"].append(deliveries_run(env, client, workdir, pool, reminders, latency_ms, baseline=True))
        runs["deliveries"].append(deliveries_run(env, client, workdir, pool, reminders, latency_ms, baseline=False))
    cpu = {k: round(statistics.median(c for _, c, _, _ in v), 2) for k, v in runs.items()}
    redis_cpu = {k: round(statistics.median(c for _, _, c, _ in v), 2) for k, v in runs.items()}
    times = {k: [t for *_, ts in v for t in ts] for k, v in runs.items()}
    task_ms = {k: {"tasks": len(ts), "p50": round(1000 * percentile(ts, 0.5), 1),
                   "p99": round(1000 * percentile(ts, 0.99), 1)} for k, ts in times.items()}
    rates = {k: [rate for rate, *_ in v] for k, v in runs.items()}
    bare, ours = statistics.median(rates["bare_posts"]), statistics.median(rates["deliveries"])
    return {"deliveries_per_s": round(ours, 1), "bare_post_tasks_per_s": round(bare, 1),
            "deliveries_ratio": round(ours / bare, 2), "latency_ms": latency_ms,
            "worker_cpu_ms_per_item": cpu, "redis_cpu_ms_per_item": redis_cpu, "task_run_ms": task_ms,
            "runs": {k: [round(v, 1) for v in vs] for k, vs in rates.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=600)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="alternated runs per figure; medians are kept")
    parser.add_argument("--parts", default="events,reads,deliveries",
                        help="which figures: events,reads (per pool) and deliveries (the Procfile's pool)")
    parser.add_argument("--deliveries", type=int, default=600)
    parser.add_argument("--delivery-pool", choices=POOLS, help="default: the Procfile's `deliveries` pool")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="lpr-workers-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis", appendonly=False).start()
        client = redis.Redis.from_url(server.url)
        now = datetime.now(timezone.utc)
        lots = {50_000 + n: [lot_row(100, 0, now + timedelta(days=90), now - timedelta(days=300), order_id=n)]
                for n in range(args.reads)}
        sandbox = serve_in_thread(create_sandbox(customers=lots, token=TOKEN, faults=Faults(latency_ms=args.latency_ms)))
        env = process_env({k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REDIS_", "CELERY_"))})
        env.update({"REDIS_URL": server.url, "SALLA_WEBHOOK_SECRET": "x", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
                    "SALLA_ACCESS_TOKEN": TOKEN, "SALLA_API_BASE_URL": sandbox.url, "SYNC_DEBOUNCE_SECONDS": "0",
                    "SALLA_PLAN_LIMIT": "10000", "SALLA_CUSTOMER_LIMIT": "100000", "LOG_LEVEL": "INFO",
                    "PYTHONPATH": str(ROOT)})
        try:
            if "deliveries" in parts:
                results["deliveries"] = deliveries_figures(env, client, workdir, args.deliveries, args.latency_ms,
                                                           args.repeat, args.delivery_pool)
                print("deliveries", json.dumps(results["deliveries"]), flush=True)
            for pool in POOLS if parts & {"events", "reads"} else ():
                # Alternated, `--repeat` times, medians kept: the machine's other load moves
                # each run, and a ratio of medians of interleaved runs moves much less.
                runs: dict[str, list] = {"bare_events": [], "events": [], "bare_reads": [], "reads": []}
                for _ in range(args.repeat):
                    runs["bare_events"].append(events_run(env, client, workdir, pool, args.events, baseline=True))
                    runs["events"].append(events_run(env, client, workdir, pool, args.events, baseline=False))
                    runs["bare_reads"].append(reads_run(env, client, workdir, pool, args.reads, sandbox.url,
                                                        baseline=True))
                    runs["reads"].append(reads_run(env, client, workdir, pool, args.reads, sandbox.url,
                                                   baseline=False))
                cpu = {k: statistics.median(c for _, c, _, _ in v) for k, v in runs.items()}
                redis_cpu = {k: statistics.median(c for _, _, c, _ in v) for k, v in runs.items()}
                # The run time of the task that does the item, every run's tasks together.
                times = {k: [t for *_, ts in v for t in ts] for k, v in runs.items()}
                task_ms = {k: {"tasks": len(ts), "p50": round(1000 * percentile(ts, 0.5), 1),
                               "p99": round(1000 * percentile(ts, 0.99), 1)} for k, ts in times.items()}
                runs = {k: [rate for rate, *_ in v] for k, v in runs.items()}
                bare_events, our_events, bare_reads, our_reads = (statistics.median(runs[k]) for k in runs)
                results[pool] = {
                    "events_per_s": round(our_events), "bare_noop_tasks_per_s": round(bare_events),
                    "events_ratio": round(our_events / bare_events, 2),
                    "reads_per_s": round(our_reads, 1), "bare_get_tasks_per_s": round(bare_reads, 1),
                    "reads_ratio": round(our_reads / bare_reads, 2),
                    "worker_cpu_ms_per_item": {k: round(v, 2) for k, v in cpu.items()},
                    "redis_cpu_ms_per_item": {k: round(v, 2) for k, v in redis_cpu.items()},
                    "task_run_ms": task_ms,
                    "runs": {k: [round(v, 1) for v in vs] for k, vs in runs.items()}}
                print(pool, json.dumps(results[pool]), flush=True)
        finally:
            sandbox.stop()
            client.close()
            server.stop()
    print(json.dumps({"pools": POOLS, "latency_ms": args.latency_ms, "results": results,
                      "procfile": {name: procfile_command(name) for name in ("intake", "reads", "deliveries")}},
                     indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
