"""`make run`'s supervisor: the pure rules, then real short-lived child processes.

The process tests run the supervisor in a thread (signals are the subprocess test's job) and
each one stops it in a `finally`, so no child outlives a failing test.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from devkit.procfile import ProcfileEntry, process_env
from devkit.supervisor import (INITIAL_DELAY, MAX_DELAY, STABLE_AFTER, Supervisor, describe_exit, group_alive,
                               prefix_line, restart_delay)

ROOT = Path(__file__).resolve().parents[2]


# -- pure rules ------------------------------------------------------------------------

def test_backoff_starts_at_one_second_and_doubles_up_to_thirty():
    delays, previous = [], None
    for _ in range(8):
        previous = restart_delay(previous, uptime=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert (INITIAL_DELAY, MAX_DELAY) == (1, 30)


def test_backoff_resets_after_a_minute_up():
    assert restart_delay(16, uptime=STABLE_AFTER) == 1
    assert restart_delay(30, uptime=3600) == 1
    assert restart_delay(16, uptime=STABLE_AFTER - 1) == 30


def test_a_line_gets_the_time_and_the_padded_name():
    when = datetime(2026, 1, 1, 12, 0, 1)
    assert prefix_line("web.1", "Listening at x", 8, when) == "12:00:01 web.1    | Listening at x"
    assert prefix_line("system", "", 6, when) == "12:00:01 system | "


def test_exit_descriptions_name_the_signal():
    assert describe_exit(3) == "exited with 3"
    assert describe_exit(0) == "exited with 0"
    assert describe_exit(-9) == "exited with -9 (SIGKILL)"
    assert describe_exit(-15) == "exited with -15 (SIGTERM)"


# -- real processes --------------------------------------------------------------------

class Output(io.StringIO):
    """The supervisor's stdout, readable while it runs."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (nobody may reap orphans here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Running:
    """A supervisor in a background thread; `stop()` is what SIGINT does."""

    def __init__(self, procfile: dict[str, str], stop_timeout: float = 5.0, cwd: Path | None = None):
        self.out = Output()
        entries = [ProcfileEntry(name, command) for name, command in procfile.items()]
        self.supervisor = Supervisor(entries, process_env(os.environ), cwd=cwd, out=self.out,
                                     stop_timeout=stop_timeout, poll_interval=0.05)
        self.thread = threading.Thread(target=self.supervisor.run, kwargs={"handle_signals": False}, daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.supervisor.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the supervisor did not stop"

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.stop()

    def pid_of(self, name: str) -> int:
        return self.supervisor.children[[c.name for c in self.supervisor.children].index(name)].process.pid

    def lines(self, text: str) -> list[str]:
        return [line for line in self.out.text().splitlines() if text in line]


def test_output_lines_carry_the_process_name():
    with Running({"hello": "echo one; echo two >&2; sleep 30"}) as run:
        wait_for(lambda: run.lines("hello.1 | two"), what="stderr, prefixed")
        assert run.lines("hello.1 | one")
        run.stop()
    assert run.lines("system  | every process stopped")


def test_a_process_that_exits_is_restarted_and_the_others_stay_up(tmp_path):
    with Running({"crash": "sleep 0.2; exit 3", "steady": f"echo $$ > {tmp_path}/steady; sleep 60"}) as run:
        wait_for(lambda: len(run.lines("crash.1 started")) >= 3, timeout=20, what="two restarts")
        exits = run.lines("crash.1 exited with 3")
        assert "restarting in 1s" in exits[0] and "restarting in 2s" in exits[1]
        assert len(run.lines("steady.1 started")) == 1
        assert alive(int((tmp_path / "steady").read_text()))
        run.stop()


def test_a_process_group_killed_with_sigkill_comes_back():
    with Running({"worker": "sleep 60 & sleep 60 & wait"}) as run:
        wait_for(lambda: run.lines("worker.1 started"), what="the start")
        first = run.pid_of("worker.1")
        os.killpg(first, signal.SIGKILL)
        wait_for(lambda: run.lines("worker.1 exited with -9 (SIGKILL)"), what="the exit")
        assert "restarting in 1s" in run.lines("worker.1 exited with -9")[0]
        wait_for(lambda: len(run.lines("worker.1 started")) == 2, what="the restart")
        second = run.pid_of("worker.1")
        assert second != first and alive(second)
        run.stop()
    assert not group_alive(second)


def test_what_an_exited_process_left_behind_is_killed_before_the_restart(tmp_path):
    """A gunicorn master that dies can leave a worker holding the port."""
    pids = tmp_path / "pids"
    with Running({"leaky": f"sleep 60 & echo $! >> {pids}; sleep 0.3; exit 1"}) as run:
        wait_for(lambda: len(run.lines("leaky.1 started")) >= 2, what="the restart")
        orphan = int(pids.read_text().split()[0])
        wait_for(lambda: not alive(orphan), timeout=5, what="the orphan's end")
        run.stop()


def test_stopping_ends_grandchildren_and_kills_what_ignores_sigterm(tmp_path):
    pids = tmp_path / "pids"
    procfile = {
        "polite": f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait",
        # Ignores SIGTERM, and so does its child: SIGKILL after the stop timeout.
        "stubborn": f"trap '' TERM; sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait; sleep 60",
    }
    with Running(procfile, stop_timeout=1.0) as run:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 4, what="four pids")
        started = time.monotonic()
        run.stop()
        took = time.monotonic() - started
    assert run.lines("stubborn.1 still running: SIGKILL")
    assert not run.lines("polite.1 still running")
    assert 0.9 < took < 5
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid), pid


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_stops_every_process_group(tmp_path, signum):
    """`python -m devkit.supervisor` as `make run` runs it, stopped by a signal."""
    pids = tmp_path / "pids"
    (tmp_path / "Procfile").write_text(
        f"a: sleep 60 & echo $! >> {pids}; wait\n"
        f"b: sh -c 'sleep 60 & echo $! >> {pids}; wait'\n")
    process = subprocess.Popen([sys.executable, "-m", "devkit.supervisor", "-f", str(tmp_path / "Procfile")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="both started")
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # the test failed: end the supervisor and what it started
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            for pid in map(int, pids.read_text().split() if pids.exists() else []):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == 0, output
    assert "every process stopped" in output
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid), pid
