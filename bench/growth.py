"""How a read's CPU grows with the customer's history: 1, 60, 600 and 6,000 rows.

    .venv/bin/python bench/growth.py [--rounds 3] [--lengths 1,60,600,6000] [--profile 6000]

For each history length, customers with that many rows are read through the service's own
read (`workers.sync.sync_customer`: token, the budget for every page, every page, the parse,
the plan, the lots and marks kept, the reminders queued in the ledger and the due set) and,
apart, planned (`service.domain.schedule.plan` over the parsed lots). Salla's answers come from an
in-process transport that hands out pages built beforehand (60 rows a page, the contract's
shape), so the CPU counted is ours, not a server's. Redis is a throwaway redis-server; its
CPU is reported apart (INFO), per read.

Baseline, from the same run: a bare read, the same pages fetched through the same transport
with `requests` and decoded with `.json()`: what any client of Salla spends per page.

The lengths are alternated round by round (the machine is shared and busy) and the median of
the rounds is kept. Growth is linear when the CPU per row stays flat from 600 to 6,000 rows:
the script prints the ratio of CPU per row at each length to that at 600 (1.0: linear), and
ours / bare at each length (flat: nothing of ours grows faster than reading the pages does).
`--profile N` prints the top of a cProfile of one read of N rows, to find a step that grows.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
import requests  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from requests.adapters import BaseAdapter  # noqa: E402

from devkit.redis_server import RedisServer  # noqa: E402
from devkit.sandbox_seed import lot_row  # noqa: E402
from service.domain.events import Customer  # noqa: E402
from service.domain.loyalty import parse_history  # noqa: E402
from service.domain.schedule import plan  # noqa: E402
from service.config.settings import Settings  # noqa: E402
from workers import sync  # noqa: E402
from service.ops.runtime import build_runtime  # noqa: E402

MERCHANT = 1305146709
PER_PAGE = 60
BASE = "https://salla.bench/admin/v2"
SERIES = 10_000_000  # customer id = SERIES * (index of its length + 1) + serial


def history(rows: int, now: datetime) -> list[dict]:
    """`rows` lots as a long-time shopper has them: most expired or used long ago, a few in
    each reminder stage, the rest later."""
    out = []
    for i in range(rows):
        days = (i * 37) % 500 - 250  # expiries from 250 days ago to 250 days ahead
        used = 100 if i % 5 == 0 else 0
        out.append(lot_row(100, used, now + timedelta(days=days, hours=i % 24), now - timedelta(days=400 - i % 100),
                           order_id=str(2_000_000_000 + i), notes="points for an order"))
    return out


def pages_of(rows: list[dict]) -> list[bytes]:
    total = max(1, -(-len(rows) // PER_PAGE))
    return [json.dumps({"status": 200, "success": True, "data": rows[p * PER_PAGE:(p + 1) * PER_PAGE],
                        "pagination": {"count": len(rows[p * PER_PAGE:(p + 1) * PER_PAGE]), "total": len(rows),
                                       "perPage": PER_PAGE, "currentPage": p + 1, "totalPages": total,
                                       "links": {}}}, ensure_ascii=False).encode()
            for p in range(total)]


class PagesTransport(BaseAdapter):
    """Salla's loyalty endpoint from pages built beforehand: a customer's id says its length."""

    def __init__(self, pages: dict[int, list[bytes]], lengths: list[int]):
        super().__init__()
        self.pages, self.lengths = pages, lengths

    def send(self, request, **kwargs):
        query = parse_qs(urlparse(request.url).query)
        length = self.lengths[int(query["customer_id"][0]) // SERIES - 1]
        page = int(query.get("page", ["1"])[0])
        response = requests.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response.headers["Content-Type"] = "application/json"
        response._content = self.pages[length][page - 1]
        return response

    def close(self):
        pass


def session_with(transport: PagesTransport) -> requests.Session:
    session = requests.Session()
    session.mount(BASE, transport)
    return session


def bare_read(session: requests.Session, customer_id: int) -> int:
    rows, page = [], 1
    while True:
        body = session.get(f"{BASE}/customers/loyalty/points", timeout=5,
                           params={"customer_id": customer_id, "page": page, "per_page": PER_PAGE}).json()
        rows.extend(body["data"])
        if page >= body["pagination"]["totalPages"]:
            return len(rows)
        page += 1


def reads_for(length: int) -> int:
    return max(3, min(200, 12_000 // length))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lengths", default="1,60,600,6000")
    parser.add_argument("--profile", type=int, default=0, help="print a profile of one read of this many rows")
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    logging.disable(logging.WARNING)  # a read logs a line; thousands would be the benchmark
    now = datetime.now(timezone.utc)
    rows_by_length = {n: history(n, now) for n in lengths}
    transport = PagesTransport({n: pages_of(rows) for n, rows in rows_by_length.items()}, lengths)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False).start()
        try:
            settings = Settings.from_env({
                "REDIS_URL": server.url, "SALLA_WEBHOOK_SECRET": "bench", "SALLA_ACCESS_TOKEN": "bench",
                "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "SALLA_API_BASE_URL": BASE,
                "SALLA_PLAN_LIMIT": "100000000", "SALLA_CUSTOMER_LIMIT": "100000000", "QUIET_HOURS": "off",
                "REMINDER_CHANNELS": "log"})
            client = redis.Redis.from_url(server.url, decode_responses=True)
            rt = build_runtime(settings, client, session_with(transport))
            bare = session_with(transport)
            serial = iter(range(1, SERIES))
            zone = settings.store_timezone

            def customer(n: int) -> int:
                c = SERIES * (lengths.index(n) + 1) + next(serial)
                rt.profiles.save(MERCHANT, Customer(c, "محمد", "+966500000001", "s@example.com", True, lang="ar"))
                return c

            def ours(n: int) -> tuple[float, float]:
                ids = [customer(n) for _ in range(reads_for(n))]
                redis_before = _redis_cpu(client)
                started = time.process_time()
                for c in ids:
                    result = sync.sync_customer(rt, MERCHANT, c, 0, lambda *a: None)
                    assert result.outcome == "read", result
                cpu = time.process_time() - started
                return 1000 * cpu / len(ids), 1000 * (_redis_cpu(client) - redis_before) / len(ids)

            def bare_ms(n: int) -> float:
                ids = [SERIES * (lengths.index(n) + 1) for _ in range(reads_for(n))]
                started = time.process_time()
                for c in ids:
                    assert bare_read(bare, c) == n
                return 1000 * (time.process_time() - started) / len(ids)

            def plan_ms(n: int) -> float:
                lots, _ = parse_history(rows_by_length[n], zone)
                times = max(3, reads_for(n))
                started = time.process_time()
                for _ in range(times):
                    plan(lots, now, settings.reminder_stages_days, zone, None, {})
                return 1000 * (time.process_time() - started) / times

            def parse_ms(n: int) -> float:
                times = max(3, reads_for(n))
                started = time.process_time()
                for _ in range(times):
                    parse_history(rows_by_length[n], zone)
                return 1000 * (time.process_time() - started) / times

            figures: dict[int, dict[str, list[float]]] = {n: {"ours": [], "redis": [], "bare": [], "plan": [],
                                                              "parse": []} for n in lengths}
            ours(lengths[0])  # warm up: imports, script loads, the first connections
            for round_ in range(args.rounds):
                order = lengths if round_ % 2 == 0 else list(reversed(lengths))
                for n in order:
                    cpu, redis_cpu = ours(n)
                    figures[n]["ours"].append(cpu)
                    figures[n]["redis"].append(redis_cpu)
                    figures[n]["bare"].append(bare_ms(n))
                    figures[n]["plan"].append(plan_ms(n))
                    figures[n]["parse"].append(parse_ms(n))
            print(report(figures, lengths, args.rounds))
            if args.profile:
                profiler = cProfile.Profile()
                c = customer(args.profile) if args.profile in lengths else None
                if c is None:
                    raise SystemExit("--profile must be one of --lengths")
                profiler.runcall(sync.sync_customer, rt, MERCHANT, c, 0, lambda *a: None)
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                print(out.getvalue())
        finally:
            server.stop()
    return 0


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def report(figures: dict, lengths: list[int], rounds: int) -> str:
    med = {n: {k: statistics.median(v) for k, v in f.items()} for n, f in figures.items()}
    anchor = 600 if 600 in med else lengths[-1]
    per_row = {n: med[n]["ours"] / n for n in lengths}
    lines = [f"CPU per read against history length ({rounds} alternated rounds, medians; ms of this process's CPU)",
             "",
             f"{'rows':>6} {'pages':>5} {'reads':>5} {'read ms':>9} {'redis ms':>9} {'bare ms':>9} {'ours/bare':>9} "
             f"{'parse ms':>9} {'plan ms':>9} {'us/row':>8} {'per row vs ' + str(anchor):>15}"]
    for n in lengths:
        m = med[n]
        lines.append(f"{n:>6} {-(-n // PER_PAGE):>5} {reads_for(n):>5} {m['ours']:>9.2f} {m['redis']:>9.2f} "
                     f"{m['bare']:>9.2f} {m['ours'] / m['bare']:>9.2f} {m['parse']:>9.3f} {m['plan']:>9.3f} "
                     f"{1000 * per_row[n]:>8.1f} {per_row[n] / per_row[anchor]:>15.2f}")
    big = lengths[-1]
    if big != anchor:
        growth = (med[big]["ours"] / med[anchor]["ours"]) / (big / anchor)
        plan_growth = (med[big]["plan"] / med[anchor]["plan"]) / (big / anchor)
        lines += ["", f"{anchor} -> {big} rows: read CPU x{med[big]['ours'] / med[anchor]['ours']:.1f} for x{big // anchor} "
                      f"the rows (per row x{growth:.2f}); plan x{med[big]['plan'] / med[anchor]['plan']:.1f} "
                      f"(per row x{plan_growth:.2f}): {'linear' if max(growth, plan_growth) < 1.3 else 'GROWS FASTER THAN LINEAR'}"]
    lines.append("raw rounds: " + json.dumps({n: {k: [round(x, 3) for x in v] for k, v in f.items()}
                                              for n, f in figures.items()}))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
