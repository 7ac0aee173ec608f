"""A small process supervisor for `make run`: the Procfile's processes, kept up.

- Each Procfile line runs as `sh -c "<command>"` in its own session, so it is its own process
  group: one signal reaches the process and everything it started (gunicorn's workers,
  Celery's pool processes).
- Output (stdout and stderr) is copied line by line with the time and the process name in
  front, like foreman and honcho: `12:00:01 web.1  | ...`. The supervisor's own lines are
  `system`'s.
- A process that exits, with any code or signal, is restarted after a backoff: 1 s, doubling
  up to 30 s, and back to 1 s once it had stayed up for 60 s. One crash never stops the
  others (honcho stopped everything).
- SIGINT or SIGTERM: SIGTERM to every process group, up to 20 s for them to go, then SIGKILL
  to whatever is left. A second Ctrl-C skips the wait.

Run it alone with `.venv/bin/python -m devkit.supervisor [-f Procfile]`.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Callable

from devkit.procfile import ProcfileEntry, process_env, read_procfile

INITIAL_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # seconds up after which a process counts as healthy again
STOP_TIMEOUT = 20.0
SYSTEM = "system"


def restart_delay(previous: float | None, uptime: float) -> float:
    """How long to wait before restarting a process that just exited after `uptime` seconds,
    given the delay used for its previous restart (None: it never exited before)."""
    if previous is None or uptime >= STABLE_AFTER:
        return INITIAL_DELAY
    return min(previous * 2, MAX_DELAY)


def prefix_line(name: str, text: str, width: int, when: datetime) -> str:
    return f"{when:%H:%M:%S} {name.ljust(width)} | {text}"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"exited with {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exited with {code}"


def group_alive(pgid: int) -> bool:
    """Whether any live process is left in the group. Zombies do not count: where nobody
    reaps orphans (some containers' init), a killed group's members stay as zombies."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Child:
    entry: ProcfileEntry
    name: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float | None = None  # the backoff used for the last restart
    restart_at: float | None = None
    reader: threading.Thread | None = None


class Supervisor:
    def __init__(self, entries: list[ProcfileEntry], env: dict[str, str], cwd: str | Path | None = None,
                 out: IO[str] | None = None, stop_timeout: float = STOP_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, poll_interval: float = 0.1):
        self.children = [Child(entry, f"{entry.name}.1") for entry in entries]
        self.env = env
        self.cwd = cwd
        self.out = out or sys.stdout
        self.stop_timeout = stop_timeout
        self.clock = clock
        self.poll_interval = poll_interval
        self.width = max(len(SYSTEM), *(len(child.name) for child in self.children))
        self._write_lock = threading.Lock()
        # Set from signal handlers: plain attributes only, no locks (a handler runs on the
        # main thread, possibly while it holds the write lock).
        self._stop_requested = False
        self._hurry = False

    # -- public ------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._stop_requested:
            self._hurry = True
        self._stop_requested = True

    def run(self, handle_signals: bool = True) -> int:
        """Start everything, keep it up until asked to stop, stop everything. Returns 0."""
        previous = {}
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: self.request_stop())
        try:
            for child in self.children:
                if not self._stop_requested:
                    self._start(child)
            while not self._stop_requested:
                self._tick()
                time.sleep(self.poll_interval)
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    # -- output ------------------------------------------------------------------------

    def _emit(self, name: str, text: str) -> None:
        with self._write_lock:
            self.out.write(prefix_line(name, text, self.width, datetime.now()) + "\n")
            self.out.flush()

    def say(self, text: str) -> None:
        self._emit(SYSTEM, text)

    def _copy_output(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self._emit(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    # -- processes ---------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = self.clock()
        try:
            child.process = subprocess.Popen(
                ["sh", "-c", child.entry.command], env=self.env, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own process group: see the module docstring
        except OSError as exc:
            child.process = None
            self._schedule_restart(child, f"could not start: {exc}")
            return
        self.say(f"{child.name} started (pid={child.process.pid})")
        child.reader = threading.Thread(target=self._copy_output, args=(child.name, child.process.stdout),
                                        name=f"output-{child.name}", daemon=True)
        child.reader.start()

    def _schedule_restart(self, child: Child, what: str) -> None:
        now = self.clock()
        child.delay = restart_delay(child.delay, now - child.started_at)
        child.restart_at = now + child.delay
        self.say(f"{child.name} {what}; restarting in {child.delay:g}s")

    def _tick(self) -> None:
        for child in self.children:
            if child.process is not None:
                code = child.process.poll()
                if code is None:
                    continue
                # What the process started may outlive it (a gunicorn worker still holding the
                # port, a pool process still taking tasks): end it before starting a new one.
                signal_group(child.process.pid, signal.SIGKILL)
                child.process = None
                self._schedule_restart(child, describe_exit(code))
            elif child.restart_at is not None and self.clock() >= child.restart_at:
                self._start(child)

    def _still_running(self, child: Child) -> bool:
        return child.process.poll() is None or group_alive(child.process.pid)

    def _stop_all(self) -> None:
        running = [child for child in self.children if child.process is not None]
        self.say(f"stopping: SIGTERM to {len(running)} process group(s)")
        for child in running:
            signal_group(child.process.pid, signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout
        while not self._hurry and self.clock() < deadline and any(self._still_running(c) for c in running):
            time.sleep(0.1)
        for child in running:
            if self._still_running(child):
                self.say(f"{child.name} still running: SIGKILL to its process group")
                signal_group(child.process.pid, signal.SIGKILL)
        for child in running:
            child.process.wait()
            if child.reader:
                child.reader.join(timeout=2)  # the last lines it wrote
        self.say("every process stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.supervisor",
                                     description="Run a Procfile's processes and keep them up.")
    parser.add_argument("-f", "--procfile", default="Procfile")
    args = parser.parse_args(argv)
    entries = read_procfile(args.procfile)
    return Supervisor(entries, process_env(os.environ), cwd=Path(args.procfile).resolve().parent).run()


if __name__ == "__main__":
    sys.exit(main())
