"""Starts and stops the service's own processes (celery worker, beat) for tests and the demo."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class ManagedProcess:
    """A child process in its own session, so that stopping it also stops its children
    (a prefork worker's pool processes)."""

    def __init__(self, args: list[str], env: dict, log_path: Path, ready_text: str | None = None,
                 append: bool = False):
        self.args = args
        self.env = env
        self.log_path = Path(log_path)
        self.ready_text = ready_text
        self.append = append  # keep the log of earlier runs (a drill restarts processes)
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    def start(self, wait_seconds: float = 60.0, wait: bool = True) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab" if self.append else "wb")
        self._log_start = log_file.tell()
        self.process = subprocess.Popen(self.args, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log_file.close()
        if self.ready_text and wait:
            self._wait_for(self.ready_text, wait_seconds)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _this_run(self) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_start)
            return handle.read().decode(errors="replace")

    def _wait_for(self, text: str, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if text in self._this_run():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.args[:4]} exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.args[:4]} not ready within {wait_seconds}s:\n{self.log_text()[-3000:]}")

    def stop(self, wait_seconds: float = 20.0) -> None:
        if not self.process or self.process.poll() is not None:
            return
        # SIGTERM is Celery's warm shutdown: finish the current task, then exit.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        self.process.wait()

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Every queue (service/config/celery_config.py): one worker that does it all, for tests and the demo.
ALL_QUEUES = "intake,events,reads,deliveries,sweep"


def celery_worker(env: dict, log_path: Path, concurrency: int = 1, name: str = "worker",
                  queues: str = ALL_QUEUES) -> ManagedProcess:
    return ManagedProcess(
        # -q: no startup banner (printed, not logged), so every line of the log is JSON.
        [sys.executable, "-m", "celery", "-A", "workers", "-q", "worker", "--loglevel=INFO", "-Q", queues,
         f"--concurrency={concurrency}", f"--hostname={name}@%h", "--without-gossip", "--without-mingle"],
        env=env, log_path=log_path, ready_text=" ready.",
    )


def celery_beat(env: dict, log_path: Path, schedule: Path) -> ManagedProcess:
    return ManagedProcess([sys.executable, "-m", "celery", "-A", "workers", "-q", "beat", "--loglevel=INFO",
                           f"--schedule={schedule}"], env=env, log_path=log_path, ready_text="beat: Starting")
