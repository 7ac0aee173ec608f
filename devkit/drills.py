"""Reliability drills: the Procfile's own processes under load, broken on purpose, and counted.

  kill      customers due for a 7-day reminder send their webhooks while every worker's whole
            process group is killed with SIGKILL (and started again) several times; Salla
            answers with latency and a share of 503s. Every customer must be reminded, soon
            after the last kill, never twice under different reminder ids.
  restart   webhooks keep arriving while Redis (append-only file on, as in docker-compose) is
            stopped for a few seconds and started again. Deliveries during the outage must get
            503 quickly (Salla retries them); every accepted one must lead to its reminder; no
            process may be left dead.

Both run with either broker: Redis (the same server as the state, as `make run` does) or
RabbitMQ (a throwaway vhost on 127.0.0.1:5672). `python -m devkit.drills kill|restart
[--broker redis|amqp]` prints the figures that docs/RELIABILITY.md records; tests/drills
asserts them.

Everything runs here, on loopback: a redis-server of its own (never the machine's shared one),
the Salla sandbox and a reminder receiver in threads, and `web`, the four workers (one per
queue) and `beat` started from the Procfile exactly as it says, each in its own process group.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from devkit.processes import ManagedProcess
from devkit.procfile import process_env, read_procfile
from devkit.rabbitmq import temporary_vhost
from devkit.receiver import ReminderLog, create_receiver
from devkit.redis_server import RedisServer, free_port
from devkit.sandbox import Faults, create_app as create_sandbox, serve_in_thread
from devkit.sandbox_seed import lot_row
from service.domain.signatures import sign

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "drill-token"
WEBHOOK_SECRET = "drill-webhook-secret"
REMINDER_SECRET = "drill-reminder-secret"
TOKEN_KEY = "ZHJpbGwtb25seS1rZXktZG8tbm90LXVzZS1ldmVyISE="  # a fixed Fernet key for drills only
MERCHANT = 1305146709
FIRST_CUSTOMER = 70_000
READY = {"web": "Booting worker", "intake": " ready.", "reads": " ready.", "deliveries": " ready.",
         "sweeper": " ready.", "beat": "beat: Starting"}
WORKERS = ("intake", "reads", "deliveries", "sweeper")  # the Procfile's celery workers, one per queue


def _order(customer_id: int, order_id: int) -> bytes:
    body = json.loads((ROOT / "tests" / "fixtures" / "salla" / "samples" / "order.created.json").read_text())
    body["merchant"], body["data"]["id"], body["data"]["customer"]["id"] = MERCHANT, order_id, customer_id
    return json.dumps(body, ensure_ascii=False).encode()


@dataclass
class Delivery:
    customer_id: int
    answers: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds), one per try

    @property
    def accepted(self) -> bool:
        return any(status == 200 for status, _ in self.answers)


class Stack:
    """Redis, the sandbox, a receiver, and the Procfile's web, worker and beat."""

    def __init__(self, workdir: Path, broker: str = "redis", customers: int = 150,
                 faults: Faults | None = None, amqp_url: str | None = None):
        self.workdir = Path(workdir)
        self.broker = broker
        self.amqp_url = amqp_url
        self.customer_ids = list(range(FIRST_CUSTOMER, FIRST_CUSTOMER + customers))
        self.faults = faults or Faults(latency_ms=30, error_rate=0.10, error_status=503)
        self.redis_port = free_port()
        self.processes: dict[str, ManagedProcess] = {}
        self.restarts: dict[str, int] = {}
        self._stack = ExitStack()
        self._watching = False
        self.timings: dict[str, float] = {}  # seconds per phase, for the report

    # -- parts ----------------------------------------------------------------------------------
    def start(self) -> "Stack":
        began = time.monotonic()
        now = datetime.now(timezone.utc)
        lots = {c: [lot_row(400, 0, now + timedelta(days=3), now - timedelta(days=300), order_id=c)]
                for c in self.customer_ids}
        self.redis = self._redis().start()
        # Whichever server is current at the end (a restart drill starts a new one): stopped.
        self._stack.callback(lambda: self.redis.stop())
        self.sandbox = self._stack.enter_context(serve_in_thread(create_sandbox(
            customers=lots, token=TOKEN, faults=self.faults, fault_seed=7)))
        self.reminders = ReminderLog(REMINDER_SECRET)
        self.receiver = self._stack.enter_context(serve_in_thread(create_receiver(self.reminders)))
        self.port = free_port()
        self.env = self._env()
        for entry in read_procfile(ROOT / "Procfile"):
            if entry.name in READY:
                self.processes[entry.name] = ManagedProcess(["sh", "-c", entry.command], self.env,
                                                            self.workdir / f"{entry.name}.log", READY[entry.name],
                                                            append=True)
        self._stack.callback(self._stop_processes)
        for process in self.processes.values():
            process.start(wait_seconds=90)
        self._watching = True
        threading.Thread(target=self._watch, daemon=True).start()
        self.timings["start"] = round(time.monotonic() - began, 1)
        return self

    def _redis(self) -> RedisServer:
        return RedisServer(self.workdir / "redis", port=self.redis_port, appendonly=True)

    def _env(self) -> dict:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("SALLA_", "REMINDER_", "CELERY_", "TOKEN_", "REDIS_", "WEB_", "WORKER_"))}
        env = process_env(base)
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        env.update({
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": self.amqp_url if self.broker == "amqp" else redis_url,
            "SALLA_WEBHOOK_SECRET": WEBHOOK_SECRET, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
            "SALLA_API_BASE_URL": self.sandbox.url, "SALLA_ACCESS_TOKEN": TOKEN, "SALLA_HTTP_TIMEOUT_SECONDS": "5",
            "SYNC_DEBOUNCE_SECONDS": "0.5", "QUIET_HOURS": "off",
            "REMINDER_CHANNELS": "webhook", "REMINDER_WEBHOOK_URL": self.receiver.url + "/reminders",
            "REMINDER_WEBHOOK_SECRET": REMINDER_SECRET,
            "PORT": str(self.port), "WEB_CONCURRENCY": "2",
            "CELERY_BEAT_SCHEDULE": str(self.workdir / "beat-schedule"), "LOG_LEVEL": "INFO",
        })
        return env

    def _watch(self) -> None:
        """A process that exits on its own is started again, as `make run` and compose do (and
        counted: the drill reports it). Kills done by the drill restart on their own."""
        while self._watching:
            for name, process in list(self.processes.items()):
                if self._watching and process.process and process.process.poll() is not None and not getattr(
                        process, "_drill_kill", False):
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    time.sleep(1)
                    try:
                        process.start(wait_seconds=90)
                    except RuntimeError:
                        pass  # counted again on the next round
            time.sleep(0.2)

    def _stop_processes(self) -> None:
        self._watching = False
        for process in self.processes.values():
            process.stop()

    def stop(self) -> None:
        began = time.monotonic()
        self._stack.close()
        self.timings["stop"] = round(time.monotonic() - began, 1)

    # -- what the drills do ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, body: bytes) -> tuple[int, float]:
        started = time.monotonic()
        try:
            status = requests.post(self.url + "/webhooks/salla", data=body, timeout=30, headers={
                "Content-Type": "application/json", "X-Salla-Signature": sign(body, WEBHOOK_SECRET)}).status_code
        except requests.RequestException:
            status = 0
        return status, time.monotonic() - started

    def kill_workers(self) -> None:
        """SIGKILL to every worker's whole process group (main process and pool) at once, then
        start them again at once (as `make run`'s supervisor or compose would, not waiting)."""
        workers = [self.processes[name] for name in WORKERS]
        for worker in workers:
            worker._drill_kill = True
            os.killpg(worker.process.pid, signal.SIGKILL)
        for worker in workers:
            worker.process.wait()
            worker.start(wait=False)
            worker._drill_kill = False

    def stop_redis(self) -> None:
        self.redis.process.terminate()  # SIGTERM: Redis writes its append-only file and exits
        self.redis.process.wait(timeout=30)

    def start_redis(self) -> None:
        self.redis = self._redis().start()

    def reminded(self) -> dict[int, list[str]]:
        """customer -> reminder ids received, in order (repeats included)."""
        got: dict[int, list[str]] = {}
        for item in self.reminders.received:
            got.setdefault(item["body"]["customer_id"], []).append(item["body"]["reminder_id"])
        return got

    def salla_statuses(self) -> dict:
        return requests.get(self.sandbox.url + "/_sandbox/stats", timeout=5).json()["by_status"]

    def alive(self) -> dict[str, bool]:
        return {name: p.process is not None and p.process.poll() is None for name, p in self.processes.items()}


def send_webhooks(stack: Stack, customers: list[int], spacing: float, retry_after: float = 2.0,
                  deadline: float = 120.0) -> list[Delivery]:
    """One order.created per customer, `spacing` seconds apart, each in its own thread so a slow
    answer does not hold the next; a non-200 is retried after `retry_after`, as Salla retries."""
    deliveries = [Delivery(c) for c in customers]

    def run(delivery: Delivery, index: int) -> None:
        body = _order(delivery.customer_id, 900_000 + index)
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            status, seconds = stack.post(body)
            delivery.answers.append((status, seconds))
            if status == 200:
                return
            time.sleep(retry_after)

    threads = []
    for index, delivery in enumerate(deliveries):
        thread = threading.Thread(target=run, args=(delivery, index), daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(spacing)
    for thread in threads:
        thread.join(deadline + 30)
    return deliveries


def wait_for_reminders(stack: Stack, customers: list[int], timeout: float) -> float | None:
    """The moment (time.monotonic) every customer had a reminder, or None if some never did."""
    started = time.monotonic()
    wanted = set(customers)
    while time.monotonic() - started < timeout:
        if wanted <= set(stack.reminded()):
            return time.monotonic()
        time.sleep(0.25)
    return None


def kill_drill(stack: Stack, kills: int = 6, every: float = 4.0, recovery_limit: float = 120.0) -> dict:
    customers = stack.customer_ids
    spacing = kills * every / len(customers)  # the webhooks arrive while the kills happen
    sender = threading.Thread(target=lambda: results.update(deliveries=send_webhooks(stack, customers, spacing)))
    results: dict = {}
    began = time.monotonic()
    sender.start()
    for _ in range(kills):
        time.sleep(every)
        stack.kill_workers()
    last_kill = time.monotonic()
    sender.join()
    stack.timings["load"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    done_at = wait_for_reminders(stack, customers, recovery_limit + 30)
    stack.timings["recovery"] = round(time.monotonic() - began, 1)
    time.sleep(3)  # a repeat still in flight arrives now, or never
    return _figures(stack, results["deliveries"], stack.reminded(), {
        "kills": kills,
        "seconds_from_last_kill_to_all_reminded": None if done_at is None else round(max(0.0, done_at - last_kill), 1),
    })


def restart_drill(stack: Stack, down_seconds: float = 6.0, customers_before: int = 40,
                  recovery_limit: float = 120.0) -> dict:
    customers = stack.customer_ids
    results: dict = {}
    sender = threading.Thread(target=lambda: results.update(deliveries=send_webhooks(stack, customers, 0.15)))
    began = time.monotonic()
    sender.start()
    time.sleep(customers_before * 0.15)
    stack.stop_redis()
    outage = time.monotonic()
    time.sleep(down_seconds)
    stack.start_redis()
    back = time.monotonic()
    sender.join()
    stack.timings["load"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    done_at = wait_for_reminders(stack, [d.customer_id for d in results["deliveries"] if d.accepted],
                                 recovery_limit)
    stack.timings["recovery"] = round(time.monotonic() - began, 1)
    time.sleep(3)
    refused = [seconds for d in results["deliveries"] for status, seconds in d.answers if status != 200]
    return _figures(stack, results["deliveries"], stack.reminded(), {
        "redis_down_seconds": round(back - outage, 1),
        "refusals": len(refused),
        "slowest_refusal_seconds": round(max(refused), 2) if refused else None,
        "seconds_from_redis_back_to_all_reminded": None if done_at is None else round(max(0.0, done_at - back), 1),
    })


def _figures(stack: Stack, deliveries: list[Delivery], reminded: dict[int, list[str]], extra: dict) -> dict:
    accepted = [d.customer_id for d in deliveries if d.accepted]
    ids_per_customer = {c: set(ids) for c, ids in reminded.items()}
    return {
        "broker": stack.broker,
        "customers": len(deliveries),
        "webhooks_accepted": len(accepted),
        "webhook_answers": _count(status for d in deliveries for status, _ in d.answers),
        "customers_reminded": len([c for c in accepted if c in reminded]),
        "customers_not_reminded": sorted(set(accepted) - set(reminded)),
        "customers_with_two_reminder_ids": sorted(c for c, ids in ids_per_customer.items() if len(ids) > 1),
        "same_id_repeats": sum(len(ids) - len(set(ids)) for ids in reminded.values()),
        "salla_answers": stack.salla_statuses(),
        "processes_alive": stack.alive(),
        "processes_restarted": dict(stack.restarts),
        **extra,
        "phase_seconds": stack.timings,
    }


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


@contextmanager
def stack_for(broker: str, workdir: Path, **options):
    with ExitStack() as stack:
        amqp_url = None
        if broker == "amqp":
            amqp_url = stack.enter_context(temporary_vhost("lpr-drill"))
        started = Stack(workdir, broker=broker, amqp_url=amqp_url, **options).start()
        stack.callback(started.stop)
        yield started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.drills", description=__doc__.split("\n\n")[0])
    parser.add_argument("drill", choices=["kill", "restart"])
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lpr-drill-") as workdir:
        started = time.monotonic()
        with stack_for(args.broker, Path(workdir), customers=150 if args.drill == "kill" else 100) as stack:
            figures = kill_drill(stack) if args.drill == "kill" else restart_drill(stack)
        figures["drill_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
