"""Webhook intake before and after a change, against the floor, alternated in the same run.

    git worktree add /tmp/intake-before <rev>      # or: git archive <rev> | tar -x -C /tmp/intake-before
    .venv/bin/python bench/ingest_before_after.py /tmp/intake-before [--rounds 3] [--seconds 10]

Each round serves, in an order drawn anew each round, the floor (bench/ingest_floor.py), ours
from the given copy of the code ("before") and ours from this tree ("after"), each under the
Procfile's gunicorn as bench/ingest.py does, on the same Redis and bodies. Each run prints req/s,
p50/p99, its ratio to the same round's floor, and the CPU per webhook of the web's processes and
of Redis (from /proc): on a shared machine the CPU figures move less with other work than req/s.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import ingest  # noqa: E402


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids += _tree(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a copy of the code before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--bodies", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    roots = {"floor": ROOT, "before": args.before.resolve(), "after": ROOT}
    hz = os.sysconf("SC_CLK_TCK")
    results: dict[str, list[dict]] = {kind: [] for kind in roots}
    with tempfile.TemporaryDirectory(prefix="lpr-ingest-ab-") as tmp:
        workdir = Path(tmp)
        bodies, script = workdir / "bodies.tsv", workdir / "send.lua"
        ingest.make_bodies(bodies, args.bodies)
        script.write_text(ingest.WRK_SCRIPT)
        server = ingest.RedisServer(workdir / "redis", appendonly=False).start()
        client = redis.Redis.from_url(server.url)
        redis_pid = int(client.info("server")["process_id"])
        env = ingest.process_env({k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REDIS_", "CELERY_"))})
        env.update({"REDIS_URL": server.url, "SALLA_WEBHOOK_SECRET": ingest.SECRET, "TOKEN_ENCRYPTION_KEY": ingest.TOKEN_KEY,
                    "SALLA_ACCESS_TOKEN": "bench", "WEB_CONCURRENCY": "2"})
        offset = 0
        try:
            for round_ in range(args.rounds):
                for kind in random.sample(list(roots), len(roots)):
                    client.flushall()  # the benchmark's own server
                    port = ingest.free_port()
                    web = ingest.ManagedProcess(
                        ["sh", "-c", ingest.web_command("gunicorn", "floor" if kind == "floor" else "ours")],
                        dict(env, PYTHONPATH=str(roots[kind]), PORT=str(port)), workdir / f"{kind}.log",
                        ready_text=ingest.READY["gunicorn"]).start(wait_seconds=60)
                    try:
                        time.sleep(1)
                        pids = _tree(web.process.pid) + [redis_pid]
                        before = {pid: _ticks(pid) for pid in pids}
                        load = os.getloadavg()[0]
                        run = ingest.wrk(f"http://127.0.0.1:{port}", script, bodies, args.connections, args.seconds, offset)
                        spent = {pid: _ticks(pid) - before[pid] for pid in pids}
                    finally:
                        web.stop()
                    offset += run["requests"]
                    run["web_cpu_us"] = round(1e6 * sum(v for p, v in spent.items() if p != redis_pid) / hz / run["requests"])
                    run["redis_cpu_us"] = round(1e6 * spent[redis_pid] / hz / run["requests"])
                    run["load"] = f"{load:.1f}->{os.getloadavg()[0]:.1f}"
                    if kind != "floor":
                        run["found_in_redis"] = ingest.accepted_in_redis(client)
                        run["accepted"] = run["requests"] - run["non_2xx"]
                    results[kind].append(run)
                    print(f"round {round_ + 1} {kind:6}: {run}", flush=True)
        finally:
            client.close()
            server.stop()
    summary = {kind: ingest.summarize(results["floor"], results[kind], args.connections, args.bodies)
               for kind in ("before", "after")}
    for kind in summary:
        summary[kind]["web_cpu_us"] = [r["web_cpu_us"] for r in results[kind]]
        summary[kind]["redis_cpu_us"] = [r["redis_cpu_us"] for r in results[kind]]
    summary["floor_cpu_us"] = {"web": [r["web_cpu_us"] for r in results["floor"]],
                               "redis": [r["redis_cpu_us"] for r in results["floor"]]}
    summary["after_over_before_req_s"] = round(statistics.median(r["req_s"] for r in results["after"])
                                               / statistics.median(r["req_s"] for r in results["before"]), 2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
