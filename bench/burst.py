"""Salla's budget under a burst: 10x a store's budget of webhooks for several stores at once.

    .venv/bin/python bench/burst.py [--stores 3] [--limit 20] [--window 10] [--multiplier 10]
                                    [--distinct-share 0.5] [--worker-concurrency 4] [--debounce 0.5]
                                    [--redis-url redis://127.0.0.1:6379/0] [--seed 1]
                                    [--keep-logs] [--dump /tmp/burst]

About 50 s per run, two runs (ours, baseline): under two minutes with the defaults.

Real parts, as in tests/integration: the Salla sandbox with its rate limits on and the web app,
both served in threads of this process; a real `celery worker` subprocess; Redis (a throwaway
redis-server, or --redis-url, where database 12 is used and only this run's keys are deleted).
Time is scaled down: each store's customer-endpoint budget is --limit requests per --window
seconds, on the sandbox and in the service alike; the plan limit is set so high that it never
binds, on both sides.

Per run: each store is authorized with a signed app.store.authorize carrying the sandbox store's
tokens (multi-store mode), then --multiplier x --limit signed order.created webhooks per store
go to the web app over HTTP as fast as they can, stores interleaved. A share of them
(--distinct-share) is for distinct customers; the rest repeat one of those customers right
after their first event, as Salla's bursts of order.* events do, so coalescing shows in the
reads per event. The customers are unknown to the sandbox, which answers with an empty history.

The same burst runs twice in the same session, each time with a fresh sandbox, fresh worker and
fresh Redis keys: "ours" with the service's budget set to the sandbox's limits, and "baseline"
with the service's budget off (SALLA_CUSTOMER_LIMIT and SALLA_PLAN_LIMIT huge), so that only
Salla's 429s, Retry-After and X-RateLimit-* headers pace it. The table compares them.

Figures (targets from the issue; PASS/MISS is printed, never asserted):
- 429s received: the sandbox's `rate_limited` counts (429s from its budgets), all stores.
- budget share while a backlog existed: per store, from the first moment a read was possible
  (its first webhook answered + SYNC_DEBOUNCE_SECONDS) to the start of its last rate-limit
  window, the requests Salla admitted divided by what Salla would have admitted in that time
  (--limit per --window); the worst store is shown. The sandbox's windows are fixed windows that
  start with the first request after the previous one ended; they are rebuilt here from every
  loyalty request's arrival time, recorded by a WSGI wrapper around the sandbox. The last
  window is left out because only part of it is needed. Also shown: the mean idle time between
  the end of a window and the start of the next, and the share that idle time would leave at
  Salla's real customer window (SALLA_CUSTOMER_WINDOW_SECONDS' default, 600 s), because that
  idle time is about one second per window whatever the window's length.
- history reads per event: loyalty requests answered 200 / webhooks sent (ideal: the share of
  distinct customers).
- slowest store's delay: max over stores of (its last read answered - its last webhook
  answered), next to the least possible for that store's distinct customers at that budget (the
  sandbox's window model, each customer readable from its first webhook + the debounce), and
  their ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from devkit.processes import celery_worker  # noqa: E402
from devkit.redis_server import RedisServer  # noqa: E402
from devkit.sandbox import StoreSpec, create_app as create_sandbox, serve_in_thread  # noqa: E402
from service.state.keys import Keys  # noqa: E402
from service.web.app import create_app  # noqa: E402
from service.config.celery_config import INTAKE_QUEUE, READS_QUEUE  # noqa: E402
from service.config.settings import Settings  # noqa: E402
from service.domain.signatures import sign  # noqa: E402

LOYALTY_PATH = "/customers/loyalty/points"
WEBHOOK_SECRET = "burst-webhook-secret"
CLIENT_ID, CLIENT_SECRET = "burst-client", "burst-client-secret"
HUGE = 10**9  # a limit that never binds
REAL_CUSTOMER_WINDOW = 600  # Salla's customer-endpoint window (SALLA_CUSTOMER_WINDOW_SECONDS default)
REDIS_DB = 12
SENDERS = 6  # threads posting webhooks
POLL_SECONDS = 0.1
TARGET_SHARE = 0.90


# -- what the sandbox saw ------------------------------------------------------------------------
@dataclass
class Hit:
    merchant: int | None
    arrived: float
    answered: float
    status: int


class LoyaltyLog:
    """A WSGI wrapper around the sandbox: the arrival and answer time and status of every
    loyalty request, per store (found by its bearer token). Exact times, where polling
    /_sandbox/stats would only place a change within the polling interval."""

    def __init__(self, app, owners: dict[str, int]):
        self.app = app
        self.owners = owners
        self.lock = threading.Lock()
        self.hits: list[Hit] = []

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != LOYALTY_PATH:
            return self.app(environ, start_response)
        arrived = time.time()
        status = {}

        def capture(line, headers, exc_info=None):
            status["code"] = int(line.split()[0])
            return start_response(line, headers, exc_info)

        body = list(self.app(environ, capture))  # small JSON: built completely before we stamp it
        auth = environ.get("HTTP_AUTHORIZATION", "")
        merchant = self.owners.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
        with self.lock:
            self.hits.append(Hit(merchant, arrived, time.time(), status.get("code", 0)))
        return body

    def of(self, merchant: int) -> list[Hit]:
        with self.lock:
            return sorted((h for h in self.hits if h.merchant == merchant), key=lambda h: h.arrived)

    def last_arrival(self) -> float:
        with self.lock:
            return max((h.arrived for h in self.hits), default=0.0)


# -- the burst -----------------------------------------------------------------------------------
@dataclass
class Event:
    merchant: int
    customer: int
    order_id: int
    answered: float = 0.0
    status: str = ""


def make_events(merchants: list[int], per_store: int, distinct: int, seed: int) -> tuple[list[Event], dict]:
    """Per store: `distinct` customers, each with one event plus a random share of the repeats,
    a customer's events back to back (Salla's order.* burst); stores interleaved round robin."""
    rng = random.Random(seed)
    extra = [0] * distinct
    for _ in range(per_store - distinct):
        extra[rng.randrange(distinct)] += 1
    streams, customers = [], {}
    for index, merchant in enumerate(merchants):
        ids = [9_000_000 + index * 100_000 + i for i in range(distinct)]  # unknown to the sandbox
        customers[merchant] = ids
        order = (index + 1) * 10_000_000
        stream = []
        for customer, repeats in zip(ids, extra):
            for _ in range(1 + repeats):
                order += 1
                stream.append(Event(merchant, customer, order))
        streams.append(stream)
    interleaved = [event for group in zip(*streams) for event in group]
    return interleaved, customers


def webhook_body(event: Event) -> bytes:
    payload = {"event": "order.created", "merchant": event.merchant, "created_at": "2026-11-25 10:00:00",
               "data": {"id": event.order_id, "reference_id": event.order_id, "status": {"slug": "under_review"},
                        "customer": {"id": event.customer, "first_name": "Burst", "last_name": str(event.customer),
                                     "mobile": 501806978, "mobile_code": "+966", "email": None}}}
    return json.dumps(payload).encode()


def post_signed(session: requests.Session, url: str, body: bytes) -> requests.Response:
    return session.post(url + "/webhooks/salla", data=body, timeout=30,
                        headers={"Content-Type": "application/json", "X-Salla-Signature": sign(body, WEBHOOK_SECRET)})


def fire(web_url: str, events: list[Event]) -> None:
    """Post every event as fast as SENDERS threads can; each records when it was answered."""
    work: queue.Queue = queue.Queue()
    for event in events:
        work.put(event)

    def sender():
        with requests.Session() as session:
            while True:
                try:
                    event = work.get_nowait()
                except queue.Empty:
                    return
                answer = post_signed(session, web_url, webhook_body(event))
                event.answered = time.time()
                event.status = answer.json().get("status", str(answer.status_code))

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- Redis watcher -------------------------------------------------------------------------------
class Watcher:
    """Samples the stores' pending queues every POLL_SECONDS (what the service still has to read)."""

    def __init__(self, client: redis.Redis, prefix: str, merchants: list[int]):
        self.client, self.prefix, self.merchants = client, prefix, merchants
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pending(self) -> dict[int, int]:
        pipe = self.client.pipeline(transaction=False)
        for merchant in self.merchants:
            pipe.zcard(Keys(self.prefix).store(merchant).pending)
        return dict(zip(self.merchants, pipe.execute()))

    def _run(self):
        while not self._stop.is_set():
            with contextlib.suppress(redis.RedisError):
                self.samples.append((time.time(), self._pending()))
            self._stop.wait(POLL_SECONDS)

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)

    def idle(self) -> bool:
        """Nothing left: no customer waiting or in flight, no task in the broker's queue."""
        if any(self._pending().values()):
            return False
        if any(self.client.zcard(Keys(self.prefix).store(merchant).inflight) for merchant in self.merchants):
            return False
        return self.client.llen(INTAKE_QUEUE) == 0 and self.client.llen(READS_QUEUE) == 0

    def backlog_present(self, merchant: int, start: float, end: float) -> float | None:
        inside = [pending[merchant] for at, pending in self.samples if start <= at < end]
        return sum(1 for n in inside if n > 0) / len(inside) if inside else None


# -- figures -------------------------------------------------------------------------------------
def windows_of(arrivals: list[float], window: float) -> list[tuple[float, int]]:
    """The sandbox's fixed windows, rebuilt from admitted requests: (start, requests in it)."""
    result: list[list] = []
    for at in arrivals:
        if not result or at >= result[-1][0] + window:
            result.append([at, 0])
        result[-1][1] += 1
    return [(start, n) for start, n in result]


def least_finish(ready: list[float], limit: int, window: float) -> float:
    """When the last of these customers could be read at the earliest: each readable from its
    time in `ready`, at most `limit` reads per fixed window (the sandbox's model), greedy."""
    start, used, at = -math.inf, 0, -math.inf
    for when in sorted(ready):
        at = max(at, when)
        if at >= start + window:
            start, used = at, 0
        if used >= limit:
            at = start + window
            start, used = at, 0
        used += 1
    return at


@dataclass
class StoreFigures:
    merchant: int
    events: int
    distinct: int
    reads: int
    requests: int
    rate_limited: int
    first_possible: float
    last_event: float
    last_read: float
    limit: int
    windows: int
    used: int
    available: float
    start_lag: float | None
    idle_per_window: float | None
    backlog_present: float | None
    least_delay: float
    counters: dict = field(default_factory=dict)

    @property
    def share(self) -> float | None:
        return self.used / self.available if self.available > 0 else None

    @property
    def delay(self) -> float:
        return self.last_read - self.last_event


@dataclass
class RunFigures:
    label: str
    stores: list[StoreFigures]
    events: int
    complete: bool
    seconds: float
    sandbox_totals_match: bool

    @property
    def rate_limited(self) -> int:
        return sum(s.rate_limited for s in self.stores)

    @property
    def reads_per_event(self) -> float:
        return sum(s.reads for s in self.stores) / self.events

    @property
    def worst_share(self) -> float | None:
        shares = [s.share for s in self.stores if s.share is not None]
        return min(shares) if shares else None

    @property
    def slowest(self) -> StoreFigures:
        return max(self.stores, key=lambda s: s.delay)

    @property
    def idle_per_window(self) -> float | None:
        idle = [s.idle_per_window for s in self.stores if s.idle_per_window is not None]
        return sum(idle) / len(idle) if idle else None

    @property
    def start_lag(self) -> float | None:
        lags = [s.start_lag for s in self.stores if s.start_lag is not None]
        return sum(lags) / len(lags) if lags else None

    @property
    def fill(self) -> float | None:
        """Admitted requests / the limit, over the windows before each store's last."""
        full = [(s.used, (s.windows - 1) * s.limit) for s in self.stores if s.windows > 1]
        return None if not full else sum(u for u, _ in full) / sum(n for _, n in full)


def store_figures(merchant: int, events: list[Event], log: LoyaltyLog, sandbox_counts: dict, counters: dict,
                  watcher: Watcher, args) -> StoreFigures:
    mine = [e for e in events if e.merchant == merchant]
    firsts: dict[int, float] = {}
    for event in sorted(mine, key=lambda e: e.answered):
        firsts.setdefault(event.customer, event.answered)
    hits = log.of(merchant)
    admitted = [h.arrived for h in hits if h.status != 429]
    reads = [h for h in hits if h.status == 200]
    first_possible = min(e.answered for e in mine) + args.debounce
    last_event = max(e.answered for e in mine)
    last_read = max((h.answered for h in reads), default=math.nan)
    windows = windows_of(admitted, args.window)
    # The period with a backlog: from the first possible read to the start of the last window.
    if len(windows) > 1:
        end = windows[-1][0]
        used = sum(1 for at in admitted if first_possible <= at < end)
        available = args.limit * (end - first_possible) / args.window
        lag = windows[0][0] - first_possible
        idle = (end - windows[0][0] - (len(windows) - 1) * args.window) / (len(windows) - 1)
        present = watcher.backlog_present(merchant, first_possible, end)
    else:
        used, available, lag, idle, present = len(admitted), 0.0, None, None, None
    least = least_finish([t + args.debounce for t in firsts.values()], args.limit, args.window) - last_event
    return StoreFigures(merchant=merchant, events=len(mine), distinct=len(firsts), reads=len(reads),
                        requests=len(hits), rate_limited=int(sandbox_counts.get("rate_limited", 0)),
                        first_possible=first_possible, last_event=last_event, last_read=last_read,
                        limit=args.limit, windows=len(windows), used=used, available=available, start_lag=lag,
                        idle_per_window=idle,
                        backlog_present=present, least_delay=least, counters=counters)


# -- one run -------------------------------------------------------------------------------------
def with_db(url: str, db: int) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def service_env(redis_url: str, prefix: str, sandbox_url: str, limit: int, window: int, debounce: float,
                log_level: str) -> dict:
    inherited = ("SALLA_", "REMINDER_", "CELERY_", "TOKEN_", "REDIS_", "SYNC_", "QUIET_", "WEBHOOK_", "LOG_LEVEL",
                 "ADMIN_TOKEN", "STORE_", "POINT_", "SWEEP_", "LOYALTY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "SALLA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "SALLA_API_BASE_URL": sandbox_url,
        "SALLA_ACCOUNTS_URL": sandbox_url,
        "SALLA_ACCESS_TOKEN": "",  # published-app mode: tokens come from app.store.authorize
        "SALLA_CLIENT_ID": CLIENT_ID,
        "SALLA_CLIENT_SECRET": CLIENT_SECRET,
        "SALLA_HTTP_TIMEOUT_SECONDS": "5",
        "SALLA_CUSTOMER_LIMIT": str(limit),
        "SALLA_CUSTOMER_WINDOW_SECONDS": str(window),
        "SALLA_PLAN_LIMIT": str(HUGE),
        "SALLA_PLAN_WINDOW_SECONDS": "60",
        "SYNC_DEBOUNCE_SECONDS": str(debounce),
        "BACKFILL_ON_AUTHORIZE": "off",  # the burst's reads only: a backfill would share the budget
        "QUIET_HOURS": "off",
        "REMINDER_CHANNELS": "log",
        "LOG_LEVEL": log_level,
    })
    return env


def run_once(label: str, args, redis_url: str, merchants: list[int], service_limit: int, workdir: Path,
             stack: contextlib.ExitStack) -> RunFigures:
    say = lambda text: print(f"[{label}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    started = time.time()
    prefix = f"bench-burst:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    stack.callback(client.close)
    stack.callback(_delete_prefix, client, prefix)

    specs = [StoreSpec(merchant_id=m, access_token=f"{label}-{m}-access", refresh_token=f"{label}-{m}-refresh",
                       limits=True, plan_per_minute=HUGE, plan_window_seconds=60,
                       customer_limit=args.limit, customer_window_seconds=args.window) for m in merchants]
    log = LoyaltyLog(None, {spec.access_token: spec.merchant_id for spec in specs})
    sandbox_app = create_sandbox(token=None, stores=specs, limits_enabled=True, client_id=CLIENT_ID,
                                 client_secret=CLIENT_SECRET)
    log.app = sandbox_app.wsgi_app
    sandbox_app.wsgi_app = log
    sandbox = stack.enter_context(serve_in_thread(sandbox_app))

    env = service_env(redis_url, prefix, sandbox.url, service_limit, args.window, args.debounce, "INFO")
    web = stack.enter_context(serve_in_thread(create_app(Settings.from_env({**env, "LOG_LEVEL": "WARNING"}))))
    worker_log = workdir / f"worker-{label}.log"
    say(f"starting a celery worker (concurrency {args.worker_concurrency}), log {worker_log}")
    worker = celery_worker(env, worker_log, concurrency=args.worker_concurrency, name=f"burst-{label}")
    stack.callback(worker.stop)
    worker.start()

    with requests.Session() as session:
        for spec in specs:
            view = session.get(f"{sandbox.url}/_sandbox/stores/{spec.merchant_id}", timeout=5).json()
            body = json.dumps({"event": "app.store.authorize", "merchant": spec.merchant_id,
                               "created_at": "2026-11-25 10:00:00",
                               "data": {"access_token": view["access_token"], "refresh_token": view["refresh_token"],
                                        "expires": view["access_expires_at"], "scope": view["scope"],
                                        "token_type": "bearer"}}).encode()
            answer = post_signed(session, web.url, body).json()
            if answer != {"status": "stored"}:
                raise RuntimeError(f"app.store.authorize for {spec.merchant_id} answered {answer}")

    per_store = args.multiplier * args.limit
    distinct = max(1, min(per_store, round(per_store * args.distinct_share)))
    events, _ = make_events(merchants, per_store, distinct, args.seed)
    watcher = Watcher(client, prefix, merchants).start()
    stack.callback(watcher.stop)
    say(f"firing {len(events)} webhooks ({len(merchants)} stores x {per_store}, {distinct} distinct customers each)")
    fire_started = time.time()
    fire(web.url, events)
    refused = [e for e in events if e.status != "queued"]
    say(f"fired in {time.time() - fire_started:.1f} s; waiting for the stores' backlogs to drain")
    if refused:
        say(f"WARNING: {len(refused)} webhooks were not queued: {sorted({e.status for e in refused})}")

    # Expected drain: distinct reads at `limit` per window, plus an idle second per window; wait 3x that.
    expected = (distinct / args.limit) * (args.window + 1) + 5
    deadline = time.time() + max(60.0, 3 * expected)
    complete = False
    while time.time() < deadline:
        time.sleep(0.25)
        if time.time() - log.last_arrival() > 1.0 and watcher.idle():
            complete = True
            break
    if not complete:
        say("WARNING: the backlog did not drain before the deadline; figures are partial")
    watcher.stop()

    stats = requests.get(sandbox.url + "/_sandbox/stats", timeout=5).json()
    counts = {int(m): c for m, c in stats["stores"].items()}
    figures = []
    for merchant in merchants:
        counters = {k: int(v) for k, v in client.hgetall(Keys(prefix).store(merchant).counters).items()}
        figures.append(store_figures(merchant, events, log, counts.get(merchant, {}), counters, watcher, args))
    matches = all(counts[f.merchant]["requests"] == f.requests and
                  counts[f.merchant]["by_status"].get("200", 0) == f.reads for f in figures)
    if not matches:
        say("WARNING: the request log and /_sandbox/stats disagree")
    if args.dump:
        path = Path(f"{args.dump}-{label}.json")
        path.write_text(json.dumps({
            "limit": args.limit, "window": args.window, "debounce": args.debounce,
            "events": [[e.merchant, e.customer, e.answered, e.status] for e in events],
            "loyalty_requests": [[h.merchant, h.arrived, h.answered, h.status] for h in log.hits],
            "pending_samples": [[at, {str(m): n for m, n in pending.items()}] for at, pending in watcher.samples]}))
        say(f"timeline written to {path}")
    worker.stop()
    if worker.process and "Traceback" in worker.log_text():
        say(f"WARNING: the worker logged a traceback, see {worker_log}")
    return RunFigures(label, figures, len(events), complete, time.time() - started, matches)


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])


# -- report --------------------------------------------------------------------------------------
def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def ratio(ours: float | None, base: float | None) -> str:
    if ours is None or base is None:
        return "n/a"
    if base == 0:
        return "n/a" if ours else "1.00"
    return f"{ours / base:.2f}"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def projected(run: RunFigures) -> float | None:
    if run.idle_per_window is None or run.fill is None:
        return None
    return run.fill * REAL_CUSTOMER_WINDOW / (REAL_CUSTOMER_WINDOW + max(run.idle_per_window, 0.0))


def report(args, ours: RunFigures, base: RunFigures, redis_note: str) -> None:
    per_store = args.multiplier * args.limit
    distinct = ours.stores[0].distinct
    print(f"Salla budget under a burst (bench/burst.py), {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, {redis_note}")
    print(f"{args.stores} stores x {per_store} webhooks ({args.multiplier} x a budget of {args.limit} per "
          f"{args.window} s), {distinct} distinct customers per store, debounce {args.debounce} s, "
          f"{args.worker_concurrency} worker processes")
    print("ours: the service's budget = the sandbox's limits; baseline: the service's budget off "
          "(only Salla's 429/Retry-After/X-RateLimit-* pace it)")
    print()
    rows = [
        ("429s received", str(ours.rate_limited), str(base.rate_limited),
         ratio(ours.rate_limited, base.rate_limited), "0", verdict(ours.rate_limited == 0)),
        ("budget share while a backlog existed", pct(ours.worst_share), pct(base.worst_share),
         ratio(ours.worst_share, base.worst_share), ">= 90%",
         verdict(None if ours.worst_share is None else ours.worst_share >= TARGET_SHARE)),
        ("  first read after it was possible (mean)", _secs(ours.start_lag), _secs(base.start_lag),
         ratio(ours.start_lag, base.start_lag), "", ""),
        ("  idle between windows (mean)", _secs(ours.idle_per_window), _secs(base.idle_per_window),
         ratio(ours.idle_per_window, base.idle_per_window), "", ""),
        (f"  share at Salla's {REAL_CUSTOMER_WINDOW} s window (projected)", pct(projected(ours)),
         pct(projected(base)), ratio(projected(ours), projected(base)), ">= 90%",
         verdict(None if projected(ours) is None else projected(ours) >= TARGET_SHARE)),
        ("history reads per event", f"{ours.reads_per_event:.3f}", f"{base.reads_per_event:.3f}",
         ratio(ours.reads_per_event, base.reads_per_event), f"ideal {distinct / per_store:.3f}", ""),
        ("slowest store's delay", _secs(ours.slowest.delay), _secs(base.slowest.delay),
         ratio(ours.slowest.delay, base.slowest.delay), "", ""),
        ("  least possible for it", _secs(ours.slowest.least_delay), _secs(base.slowest.least_delay), "", "", ""),
        ("  delay / least possible", f"{ours.slowest.delay / ours.slowest.least_delay:.2f}",
         f"{base.slowest.delay / base.slowest.least_delay:.2f}", "", "", ""),
    ]
    header = ("", "ours", "baseline", "ours/base", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(6)]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(row)).rstrip())
    print()
    print("per store: events, distinct customers, 200s, 429s, windows, admitted/available before the last window "
          "(share), backlog present, delay (least possible)")
    for run in (ours, base):
        for s in run.stores:
            print(f"  {run.label:<8} {s.merchant}: {s.events} ev, {s.distinct} cust, {s.reads} reads, "
                  f"{s.rate_limited} x 429, {s.windows} windows, {s.used}/{s.available:.1f} ({pct(s.share)}), "
                  f"backlog {pct(s.backlog_present)}, delay {_secs(s.delay)} ({_secs(s.least_delay)})")
        service = {k: sum(s.counters.get(k, 0) for s in run.stores)
                   for k in ("events", "events_coalesced", "reads", "salla_429", "syncs_failed")}
        notes = "" if run.complete else ", DID NOT DRAIN"
        notes += "" if run.sandbox_totals_match else ", request log != /_sandbox/stats"
        print(f"  {run.label:<8} service counters {service}; run {run.seconds:.0f} s{notes}")


def _secs(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f} s"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/burst.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20, help="customer-endpoint requests per window, per store")
    parser.add_argument("--window", type=int, default=10, help="seconds (whole: SALLA_CUSTOMER_WINDOW_SECONDS is)")
    parser.add_argument("--multiplier", type=int, default=10, help="webhooks per store = multiplier x limit")
    parser.add_argument("--distinct-share", type=float, default=0.5,
                        help="share of the webhooks that are for distinct customers (the rest repeat them)")
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--debounce", type=float, default=0.5, help="SYNC_DEBOUNCE_SECONDS")
    parser.add_argument("--redis-url", help=f"use this Redis (database {REDIS_DB}; only this run's keys are "
                                            "deleted); default: a throwaway redis-server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (path printed)")
    parser.add_argument("--dump", metavar="PREFIX",
                        help="write each run's timeline (webhooks, loyalty requests, pending sizes) to PREFIX-<run>.json")
    args = parser.parse_args(argv)
    if args.stores < 1 or args.limit < 1 or args.window < 1 or args.multiplier < 1 \
            or not 0 < args.distinct_share <= 1 or args.worker_concurrency < 1:
        parser.error("--stores, --limit, --window, --multiplier, --worker-concurrency must be >= 1 and "
                     "--distinct-share in (0, 1]")

    # SIGTERM ends the run like Ctrl-C: everything started is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="burst-bench-"))
    results: dict[str, RunFigures] = {}
    try:
        with contextlib.ExitStack() as outer:
            if args.redis_url:
                redis_url, redis_note = with_db(args.redis_url, REDIS_DB), f"Redis at --redis-url, db {REDIS_DB}"
            else:
                server = RedisServer(workdir / "redis", appendonly=False).start()
                outer.callback(server.stop)
                redis_url, redis_note = with_db(server.url, REDIS_DB), "throwaway redis-server"
            runs = [("ours", args.limit, 0), ("baseline", HUGE, 1)]
            for label, service_limit, index in runs:
                merchants = [710_000 + index * 1000 + i for i in range(1, args.stores + 1)]
                with contextlib.ExitStack() as stack:  # each run stops its worker and servers
                    results[label] = run_once(label, args, redis_url, merchants, service_limit, workdir, stack)
        report(args, results["ours"], results["baseline"], redis_note)
        return 0
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep_logs:
            print(f"worker logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
