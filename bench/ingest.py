"""Webhook intake against its floor, under the same gunicorn, in one run.

    .venv/bin/python bench/ingest.py [--bodies 40000] [--connections 64] [--seconds 12] [--rounds 3]

- Bodies: distinct signed Arabic `order.created` webhooks for 20 stores (one customer each),
  made once and sent by wrk (Debian's `wrk`, installed with apt-get when missing).
- The floor (bench/ingest_floor.py): HMAC check and one LPUSH, nothing else.
- Ours: the Procfile's `web` command as it stands (gunicorn settings, access log and all),
  with Redis as the broker, on a Redis server of the benchmark's own.
- They run alternately, `--rounds` times each, on the same port settings and the same bodies;
  the script prints req/s and p50/p99 of each run, the medians and the ratio ours/floor.
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
end
function request()
  counter = counter + 1
  local i = ((counter * step) % #bodies) + 1
  return wrk.format("POST", "/webhooks/salla", {["Content-Type"] = "application/json",
    ["X-Salla-Signature"] = signatures[i]}, bodies[i])
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


def wrk(url: str, script: Path, bodies: Path, connections: int, seconds: int, offset: int) -> dict:
    # One wrk thread per core: the server has the rest of the machine.
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url,
                          "--", str(bodies), str(offset), "1"], capture_output=True, text=True, timeout=seconds + 60)
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


def serve(kind: str, env: dict, workdir: Path, port: int) -> ManagedProcess:
    web = next(e for e in read_procfile(ROOT / "Procfile") if e.name == "web").command
    if kind == "floor":
        web = web.replace('"service.web.app:create_app()"', '"bench.ingest_floor:create_app()"')
        assert "bench.ingest_floor" in web, "the Procfile's web command no longer names service.web.app:create_app()"
    return ManagedProcess(["sh", "-c", web], dict(env, PORT=str(port)), workdir / f"{kind}.log",
                          ready_text="Booting worker").start(wait_seconds=60)


def accepted_in_redis(client: redis.Redis) -> int:
    return sum(client.zcard(key) for key in client.scan_iter(match="lpr:{store:*}:inbox", count=1000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="lpr-ingest-") as tmp:
        workdir = Path(tmp)
        bodies, script = workdir / "bodies.tsv", workdir / "send.lua"
        make_bodies(bodies, args.bodies)
        script.write_text(WRK_SCRIPT)
        server = RedisServer(workdir / "redis", appendonly=False).start()
        client = redis.Redis.from_url(server.url)
        env = process_env({k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REDIS_", "CELERY_"))})
        env.update({"REDIS_URL": server.url, "SALLA_WEBHOOK_SECRET": SECRET, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
                    "SALLA_ACCESS_TOKEN": "bench", "WEB_CONCURRENCY": "2", "PYTHONPATH": str(ROOT)})
        results: dict[str, list[dict]] = {"floor": [], "ours": []}
        offset = 0
        try:
            for round_ in range(args.rounds):
                for kind in ("floor", "ours"):
                    client.flushall()  # the benchmark's own server: nothing else lives there
                    port = free_port()
                    web = serve(kind, env, workdir, port)
                    try:
                        time.sleep(1)
                        run = wrk(f"http://127.0.0.1:{port}", script, bodies, args.connections, args.seconds, offset)
                    finally:
                        web.stop()
                    offset += run["requests"]
                    if kind == "ours":
                        run["found_in_redis"] = accepted_in_redis(client)
                        run["accepted"] = run["requests"] - run["non_2xx"]
                    results[kind].append(run)
                    print(f"round {round_ + 1} {kind:5}: {run}", flush=True)
        finally:
            client.close()
            server.stop()
    floor = statistics.median(r["req_s"] for r in results["floor"])
    ours = statistics.median(r["req_s"] for r in results["ours"])
    summary = {
        "floor_req_s": floor, "ours_req_s": ours, "ratio": round(ours / floor, 2),
        "floor_p50_ms": statistics.median(r["p50_ms"] for r in results["floor"]),
        "floor_p99_ms": statistics.median(r["p99_ms"] for r in results["floor"]),
        "ours_p50_ms": statistics.median(r["p50_ms"] for r in results["ours"]),
        "ours_p99_ms": statistics.median(r["p99_ms"] for r in results["ours"]),
        "ours_errors": sum(r["non_2xx"] for r in results["ours"]),
        # wrk stops with up to one request per connection still in flight: accepted by the
        # server, not counted by wrk.
        "every_accepted_webhook_found": all(r["accepted"] <= r["found_in_redis"] <= r["accepted"] + args.connections
                                            for r in results["ours"]),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
