"""Issue 16 item 5, the operator's CLI as an operator runs it: the `salla-reminders` console
script, in a second shell beside `make run`, finding its Redis through .env alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from devkit.redis_server import RedisServer
from service.state.stores import StoreRegistry
from tests.conftest import TOKEN_KEY

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "salla-reminders"


@pytest.fixture
def make_run_redis(tmp_path):
    """A throwaway redis-server on a free port, and a .env like the one `make run` leaves behind
    (its embedded Redis's URL written at the end)."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    shell = tmp_path / "second-shell"
    shell.mkdir()
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    (shell / ".env").write_text(example.replace("SALLA_WEBHOOK_SECRET=\n", "SALLA_WEBHOOK_SECRET=s3cret\n")
                                .replace("TOKEN_ENCRYPTION_KEY=\n", f"TOKEN_ENCRYPTION_KEY={TOKEN_KEY}\n")
                                + f"REDIS_URL={server.url}\n")
    yield server, shell
    server.stop()


def cli(shell: Path, *args: str) -> subprocess.CompletedProcess:
    # Nothing of ours in the environment: what the CLI knows comes from ./.env.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(shell), "LANG": "C.UTF-8"}
    return subprocess.run([str(SCRIPT), *args], cwd=shell, env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_reads_make_runs_redis_from_env_refuses_unknown_stores_and_says_when_redis_is_down(make_run_redis):
    """Issue 16 must-show: the CLI as a subprocess against a make-run-style Redis from .env:
    `stores`; an unknown merchant is exit 2 and creates no store; Redis down is exit 3, one line."""
    server, shell = make_run_redis
    client = redis.Redis.from_url(server.url, decode_responses=True)
    StoreRegistry(client, "lpr:").set_state(7, "active")
    assert SCRIPT.exists(), "the console script is installed with the project (pyproject [project.scripts])"

    table = cli(shell, "stores")
    assert table.returncode == 0, table.stderr
    assert "merchant_id" in table.stdout and "7" in table.stdout and not table.stdout.lstrip().startswith("[")
    listed = cli(shell, "--json", "stores")
    assert listed.returncode == 0 and [s["merchant_id"] for s in json.loads(listed.stdout)] == [7]
    assert json.loads(cli(shell, "stores", "--json").stdout)[0]["merchant_id"] == 7

    before = sorted(client.keys("*"))
    for args in (["store", "999"], ["set-store", "999", "--plan-limit", "360"], ["reset-store", "999"]):
        answer = cli(shell, *args)
        assert answer.returncode == 2, (args, answer.stdout, answer.stderr)
        assert answer.stderr.strip() == "error: no store 999: it never installed the app (see `stores`)"
    assert sorted(client.keys("*")) == before and not client.sismember("lpr:stores", 999)

    server.stop()
    down = cli(shell, "stores")
    assert down.returncode == 3
    assert len(down.stderr.strip().splitlines()) == 1 and "Traceback" not in down.stderr
    assert down.stderr.startswith(f"unavailable: Redis at redis://127.0.0.1:{server.port} did not answer")


def test_usage_and_configuration_errors_are_exit_2(make_run_redis):
    """Issue 16 item 5: exit 2 for usage or configuration, with help from the commands' docstrings."""
    server, shell = make_run_redis
    assert cli(shell, "no-such-command").returncode == 2
    helped = cli(shell, "--help")
    assert helped.returncode == 0 and "Every store: state, counters" in helped.stdout
    assert "After changing DUE_SET_SHARDS" in cli(shell, "reshard-due-set", "--help").stdout
    env_file = shell / ".env"
    env_file.write_text(env_file.read_text().replace(f"TOKEN_ENCRYPTION_KEY={TOKEN_KEY}\n", "TOKEN_ENCRYPTION_KEY=\n"))
    broken = cli(shell, "stores")
    assert broken.returncode == 2 and broken.stderr.startswith("configuration error: TOKEN_ENCRYPTION_KEY is required")
