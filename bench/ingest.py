"""Webhook intake against its floor, under the same gunicorn, in one run.

    .venv/bin/python bench/ingest.py [--bodies 100000] [--connections 64] [--seconds 12] [--rounds 3]
                                     [--server gunicorn|granian|both]

- Bodies: distinct signed Arabic `order.created` webhooks for 20 stores (one customer each),
  made once and sent by wrk (Debian's `wrk`, installed with apt-get when missing).
- The floor (bench/ingest_floor.py): HMAC check and one LPUSH, nothing else.
- Ours: the Procfile's `web` command as it stands (gunicorn settings, access log and all),
  with Redis as the broker, on a Redis server of the benchmark's own.
- They run alternately, `--rounds` times each, on the same port settings and the same bodies;
  the script prints req/s and p50/p99 of each run, the medians and the ratio ours/floor.
- `--close` sends each webhook on a new connection (gunicorn's sync workers close every
  connection anyway; granian keeps them open unless told).
- `--server granian` serves both apps with granian (Rust, WSGI) instead, with the same
  workers (WEB_CONCURRENCY); `both` alternates the four in each round and prints
  granian/gunicorn for each app.
- Every accepted webhook is found afterwards: the events waiting in the stores' inboxes are
  counted and must cover the 2xx answers wrk got (Redis is emptied before each run; wrk
  stops with up to one request per connection in flight, accepted but not counted by it).
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from devkit.processes import ManagedProcess  # noqa: E402
from devkit.procfile import process_env, read_procfile  # noqa: E402
from devkit.redis_server import RedisServer, free_port  # noqa: E402

SECRET = "bench-webhook-secret"
TOKEN_KEY = "YmVuY2gtb25seS1rZXktZG8tbm90LXVzZS1pdCEhISE="
STORES = 20

WRK_SCRIPT = r"""
local bodies, signatures = {}, {}
local counter = 0
function init(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t")
    signatures[#signatures + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
  counter = tonumber(args[2]) or 0
  step = tonumber(args[3]) or 1
  close = args[4] == "close"
end
function request()
  counter = counter + 1
  local i = ((counter * step) % #bodies) + 1
  local headers = {["Content-Type"] = "application/json", ["X-Salla-Signature"] = signatures[i]}
  if close then headers["Connection"] = "close" end
  return wrk.format("POST", "/webhooks/salla", headers, bodies[i])
end
"""


def make_bodies(path: Path, count: int) -> None:
    sample = json.loads((ROOT / "tests/fixtures/salla/samples/order.created.json").read_text())
    with path.open("w") as handle:
        for n in range(count):
            body = json.loads(json.dumps(sample))
            body["merchant"] = 1_000 + n % STORES
            body["data"]["id"] = 5_000_000 + n
            body["data"]["customer"]["id"] = 800_000 + n
            body["data"]["customer"]["first_name"], body["data"]["customer"]["last_name"] = "محمد", "العتيبي"
            raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            handle.write(hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest() + "\t" + raw.decode() + "\n")


def wrk(url: str, script: Path, bodies: Path, connections: int, seconds: int, offset: int,
        close: bool = False) -> dict:
    # One wrk thread per core: the server has the rest of the machine.
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url,
                          "--", str(bodies), str(offset), "1", "close" if close else "keep"], capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout
    requests_ = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"req_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
            "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", text).group(1)),
            "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", text).group(1)),
            "requests": requests_, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1).strip() if errors else None}


def _ms(value: str) -> float:
    number, unit = float(re.match(r"[\d.]+", value).group()), re.sub(r"[\d.]+", "", value)
    return round(number * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit], 2)


# granian with the Procfile's workers, on its defaults otherwise (threads, backpressure); its
# access log off (its default), as gunicorn's is; GRANIAN_* variables tune the rest.
GRANIAN = ("granian --interface wsgi --factory --workers ${WEB_CONCURRENCY:-2} --host 127.0.0.1 --port ${PORT} "
           "--log-level info {app}")
READY = {"gunicorn": "Booting worker", "granian": "Started worker-"}


def web_command(server: str, kind: str) -> str:
    """The command that serves `kind` (ours or the floor) under `server`: for gunicorn the
    Procfile's `web` as it stands; for granian the same app and workers."""
    app = "bench.ingest_floor:create_app" if kind == "floor" else "service.web.app:create_app"
    if server == "granian":
        return GRANIAN.replace("{app}", app)
    web = next(e for e in read_procfile(ROOT / "Procfile") if e.name == "web").command
    if kind == "floor":
        web = web.replace('"service.web.app:create_app()"', '"bench.ingest_floor:create_app()"')
        assert "bench.ingest_floor" in web, "the Procfile's web command no longer names service.web.app:create_app()"
    return web


def serve(kind: str, env: dict, workdir: Path, port: int, server: str = "gunicorn") -> ManagedProcess:
    ready = READY["granian" if server == "granian" else "gunicorn"]
    return ManagedProcess(["sh", "-c", web_command(server, kind)], dict(env, PORT=str(port)),
                          workdir / f"{server}-{kind}.log", ready_text=ready).start(wait_seconds=60)


def accepted_in_redis(client: redis.Redis) -> int:
    return sum(client.zcard(key) for key in client.scan_iter(match="lpr:{store:*}:inbox", count=1000))


def summarize(floor_runs: list[dict], our_runs: list[dict], connections: int, bodies: int = 10**9) -> dict:
    """Medians of the alternated runs, the ratio of the medians, and each round's ratio (the
    issue asks for >= 0.75 in every round, not only in the median). A run that sent more
    webhooks than there are bodies sent repeats past the `bodies`-th: each answered 200 and
    dropped as a duplicate, so at most `bodies` events are found."""
    floor = statistics.median(r["req_s"] for r in floor_runs)
    ours = statistics.median(r["req_s"] for r in our_runs)
    return {
        "floor_req_s": floor, "ours_req_s": ours, "ratio": round(ours / floor, 2),
        "round_ratios": [round(o["req_s"] / f["req_s"], 2) for f, o in zip(floor_runs, our_runs)],
        "floor_p50_ms": statistics.median(r["p50_ms"] for r in floor_runs),
        "floor_p99_ms": statistics.median(r["p99_ms"] for r in floor_runs),
        "ours_p50_ms": statistics.median(r["p50_ms"] for r in our_runs),
        "ours_p99_ms": statistics.median(r["p99_ms"] for r in our_runs),
        "ours_p99_ms_worst": max(r["p99_ms"] for r in our_runs),
        "ours_errors": sum(r["non_2xx"] for r in our_runs),
        # wrk stops with up to one request per connection still in flight: accepted by the
        # server, not counted by wrk.
        "every_accepted_webhook_found": all(
            min(r["accepted"], bodies) <= r["found_in_redis"] <= min(r["accepted"] + connections, bodies)
            for r in our_runs),
        "runs_with_repeats": sum(r["requests"] > bodies for r in our_runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # More than a run sends (granian served ours at 4,000-4,300 a second on a busy machine):
    # past them a run sends repeats, which cost less than new webhooks.
    parser.add_argument("--bodies", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=("gunicorn", "granian", "both"), default="gunicorn")
    parser.add_argument("--close", action="store_true",
                        help="a new connection per webhook (Connection: close), as a sender that keeps none "
                             "open sends them; gunicorn's sync workers close every connection anyway")
    args = parser.parse_args(argv)
    servers = ("gunicorn", "granian") if args.server == "both" else (args.server,)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="lpr-ingest-") as tmp:
        workdir = Path(tmp)
        bodies, script = workdir / "bodies.tsv", workdir / "send.lua"
        make_bodies(bodies, args.bodies)
        script.write_text(WRK_SCRIPT)
        server_ = RedisServer(workdir / "redis", appendonly=False).start()
        client = redis.Redis.from_url(server_.url)
        env = process_env({k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REDIS_", "CELERY_"))})
        env.update({"REDIS_URL": server_.url, "SALLA_WEBHOOK_SECRET": SECRET, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
                    "SALLA_ACCESS_TOKEN": "bench", "WEB_CONCURRENCY": "2", "PYTHONPATH": str(ROOT)})
        results: dict[tuple, list[dict]] = {(server, kind): [] for server in servers for kind in ("floor", "ours")}
        offset = 0
        try:
            for round_ in range(args.rounds):
                for server, kind in results:
                    client.flushall()  # the benchmark's own server: nothing else lives there
                    port = free_port()
                    web = serve(kind, env, workdir, port, server)
                    try:
                        time.sleep(1)
                        run = wrk(f"http://127.0.0.1:{port}", script, bodies, args.connections, args.seconds, offset,
                                  args.close)
                    finally:
                        web.stop()
                    offset += run["requests"]
                    if kind == "ours":
                        run["found_in_redis"] = accepted_in_redis(client)
                        run["accepted"] = run["requests"] - run["non_2xx"]
                    results[server, kind].append(run)
                    name = kind if len(servers) == 1 else f"{server} {kind}"
                    print(f"round {round_ + 1} {name:5}: {run}", flush=True)
        finally:
            client.close()
            server_.stop()
    summary = {server: summarize(results[server, "floor"], results[server, "ours"], args.connections, args.bodies)
               for server in servers}
    if len(servers) == 1:
        summary = summary[servers[0]]
    else:
        # What the issue asks of a faster server: >= 1.3 x the webhooks per second, p99 no worse.
        summary["granian_over_gunicorn"] = {
            kind: {"req_s": round(summary["granian"][f"{kind}_req_s"] / summary["gunicorn"][f"{kind}_req_s"], 2),
                   "p99_ms": [summary["gunicorn"][f"{kind}_p99_ms"], summary["granian"][f"{kind}_p99_ms"]]}
            for kind in ("ours", "floor")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
