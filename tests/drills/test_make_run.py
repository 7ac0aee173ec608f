"""Drill: a new user's `make run`, from a fresh clone, in a fresh shell's environment.

1. `git clone` the repository this file is in, and check out its HEAD commit. Uncommitted
   changes are NOT part of the drill: commit them first (the test prints a warning).
2. `make run` there with no virtualenv active, PATH=/usr/local/bin:/usr/bin:/bin, REDIS_URL
   unset (so the embedded Redis starts) and free ports for web, Flower and that Redis.
   `make` creates `.venv` and pip-installs the project; the test prints how long that took
   (pip's cache, ~/.cache/pip, makes it quicker).
3. The worker reads an in-process Salla sandbox. A signed `order.created` for customer 1001
   (400 points expiring in 3 days) must come out as the `log` channel's `reminder {...}` line.
4. kill -9 of the worker's whole process group: the supervisor restarts it, and customer
   1005's webhook still ends in a reminder.
5. Ctrl-C (SIGINT to make's process group, as a terminal sends it). Nothing the clone started
   may be left: no live process with the clone's path in its command line, and no live
   member in any process group the supervisor started.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from devkit.redis_server import free_port, redis_answers
from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from devkit.supervisor import group_alive
from tests.integration.test_end_to_end import order_created
from service.domain.signatures import sign

pytestmark = [pytest.mark.drill, pytest.mark.slow]

FRESH_PATH = "/usr/local/bin:/usr/bin:/bin"
# The machine's own set-up that a fresh login shell here has too: where pip finds packages
# (mirrors, wheel directories, its cache under HOME) and proxies. Nothing of the project's.
PASSED_THROUGH = ("HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "http_proxy", "https_proxy", "no_proxy",
                  "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
STARTED_LINE = re.compile(r"(\S+) started \(pid=(\d+)\)")


def repository_root() -> Path:
    here = Path(__file__).resolve().parent
    return Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, check=True, capture_output=True,
                               text=True).stdout.strip())


def fresh_path() -> str:
    """The fresh PATH, plus the directory of a Python 3.11+ when that PATH has none."""
    found = shutil.which("python3", path=FRESH_PATH)
    if found and subprocess.run([found, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"]).returncode == 0:
        return FRESH_PATH
    return FRESH_PATH + os.pathsep + str(Path(sys.base_prefix) / "bin")


def fresh_env(**settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name in PASSED_THROUGH or name.startswith("PIP_")}
    env["PATH"] = fresh_path()
    env.update(settings)
    return env


def live_processes_under(path: Path) -> dict[int, str]:
    """pid -> command line of every live process whose command line names `path`.
    (Zombies have an empty command line, so they are not counted.)"""
    needle = str(path) + "/"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and int(entry.name) != os.getpid():
            found[int(entry.name)] = cmdline.strip()
    return found


class MakeRun:
    """`make run` in `clone`, its output in a file we can read while it runs."""

    def __init__(self, clone: Path, env: dict[str, str], log_path: Path):
        self.clone, self.log_path = clone, log_path
        with open(log_path, "wb") as log_file:
            # Its own session: SIGINT to its group is a terminal's Ctrl-C, and nothing reaches pytest.
            self.process = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return "\n--- make run output (tail) ---\n" + self.output()[-chars:]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"`make run` exited ({self.process.returncode}) while waiting for {what}"
                                     + self.tail())
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + self.tail())

    def reminders(self) -> list[dict]:
        from devkit.logfiles import reminders_in

        return reminders_in(self.output())

    def started(self) -> list[tuple[str, int]]:
        return [(m.group(1), int(m.group(2))) for m in STARTED_LINE.finditer(self.output())]

    def pid_of(self, name: str) -> int:
        return [pid for started, pid in self.started() if started == name][-1]

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> None:
        os.killpg(self.process.pid, signum)
        self.process.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """After a failure: make, the supervisor, and every group the clone's processes are in."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in live_processes_under(self.clone):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_make_run_in_a_fresh_clone_delivers_reminders_survives_kill_9_and_stops_clean(tmp_path):
    for tool in ("git", "make"):
        if not shutil.which(tool):
            pytest.skip(f"no {tool} on this machine")
    drill_started = time.monotonic()
    root = repository_root()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip():
        print(f"note: {root} has uncommitted changes; the drill runs the committed HEAD {head[:10]} only")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=clone, check=True)

    web_port, flower_port, redis_port = free_port(), free_port(), free_port()
    with serve_in_thread(create_sandbox(token="sandbox-token")) as sandbox:
        env = fresh_env(PORT=str(web_port), FLOWER_PORT=str(flower_port), EMBEDDED_REDIS_PORT=str(redis_port),
                        SALLA_API_BASE_URL=sandbox.url, SALLA_ACCESS_TOKEN="sandbox-token", QUIET_HOURS="off",
                        SYNC_DEBOUNCE_SECONDS="0.5",
                        LOG_FORMAT="json")  # the drill reads the log channel's reminders back from JSON lines
        assert "VIRTUAL_ENV" not in env and "REDIS_URL" not in env
        make_started = time.monotonic()
        run = MakeRun(clone, env, tmp_path / "make-run.log")
        try:
            # 1. make creates .venv and installs the project.
            run.wait_for(lambda: (clone / ".venv" / ".installed").exists(), timeout=300, what="the install")
            print(f"venv + pip install in the fresh clone: {time.monotonic() - make_started:.0f}s")

            # 2. Every Procfile process is up, from the clone's .venv, on our ports.
            web = f"http://127.0.0.1:{web_port}"

            def web_answers():
                try:
                    return requests.get(web + "/healthz", timeout=2).status_code == 200
                except requests.RequestException:  # not listening yet, or its workers still booting
                    return False

            run.wait_for(web_answers, timeout=60, what="the web's /healthz")
            print(f"`make run` answering: {time.monotonic() - make_started:.0f}s after it started")
            assert {name for name, _ in run.started()} == {"web.1", "intake.1", "reads.1", "deliveries.1", "sweeper.1",
                                                           "beat.1", "flower.1"}
            assert "not found" not in run.output(), run.tail()
            assert redis_answers(f"redis://127.0.0.1:{redis_port}/0")

            # 3. A signed order webhook becomes a logged reminder.
            secret = dotenv_values(clone / ".env")["SALLA_WEBHOOK_SECRET"]
            assert secret

            def deliver(customer_id: int, order_id: int) -> None:
                body = order_created(customer_id, order_id=order_id)
                answer = requests.post(web + "/webhooks/salla", data=body, timeout=10, headers={
                    "Content-Type": "application/json", "X-Salla-Signature": sign(body, secret)})
                assert answer.status_code == 200 and answer.json() == {"status": "queued"}, answer.text

            def reminder_for(customer_id: int):
                return [r for r in run.reminders() if r["customer_id"] == customer_id]

            deliver(1001, order_id=1)
            [first] = run.wait_for(lambda: reminder_for(1001), timeout=90, what="customer 1001's reminder")
            assert (first["stage_days"], first["points_expiring"]) == (7, 400)
            print(f"first reminder {first['reminder_id']} after {time.monotonic() - drill_started:.0f}s")

            # 4. kill -9 the worker's process group: restarted, and it still does its job.
            killed = run.pid_of("intake.1")
            os.killpg(killed, signal.SIGKILL)
            run.wait_for(lambda: "intake.1 exited with -9 (SIGKILL); restarting in 1s" in run.output(), timeout=10,
                         what="the supervisor noticing the kill")
            run.wait_for(lambda: run.pid_of("intake.1") != killed, timeout=10, what="the worker's restart")
            assert [name for name, _ in run.started()].count("web.1") == 1  # the others never stopped
            deliver(1005, order_id=2)
            [second] = run.wait_for(lambda: reminder_for(1005), timeout=90, what="customer 1005's reminder")
            assert (second["stage_days"], second["points_expiring"]) == (7, 250)

            # 5. Ctrl-C: everything goes.
            groups = [pid for _, pid in run.started()]
            run.stop(signal.SIGINT)
            output = run.output()
            assert "every process stopped" in output, run.tail()
            assert live_processes_under(clone) == {}, run.tail()
            assert [pgid for pgid in groups if group_alive(pgid)] == []
            assert not redis_answers(f"redis://127.0.0.1:{redis_port}/0", timeout=0.5)
            assert len(reminder_for(1001)) == 1 and len(reminder_for(1005)) == 1
            print(f"drill: {time.monotonic() - drill_started:.0f}s in all")
        finally:
            run.kill_everything()
            shutil.rmtree(clone, ignore_errors=True)  # .venv is a few hundred MB; the log stays in tmp_path
