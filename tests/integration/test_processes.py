"""The Procfile's processes as an operator runs them: bad settings stop them, Flower sees the work."""
from __future__ import annotations

import time
import subprocess
import sys

import pytest
import requests

from devkit.processes import ManagedProcess
from devkit.redis_server import free_port
from tests.integration.conftest import wait_until
from tests.integration.test_end_to_end import deliver, order_created

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "service.web.app:create_app()"],
    [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool=solo"],
    [sys.executable, "-m", "celery", "-A", "workers", "beat"],
])
@pytest.mark.parametrize("bad_env, variable", [
    ({"SALLA_WEBHOOK_SECRET": ""}, "SALLA_WEBHOOK_SECRET"),
    ({"REMINDER_STAGES_DAYS": "30,soon"}, "REMINDER_STAGES_DAYS"),
])
def test_a_wrong_setting_stops_the_process_naming_the_variable(service_env, command, bad_env, variable):
    env = dict(service_env, **bad_env)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert variable in result.stdout + result.stderr


@pytest.mark.slow
def test_flower_shows_the_worker_and_its_tasks(web, worker, service_env, tmp_path):
    port = free_port()
    env = dict(service_env, FLOWER_BASIC_AUTH="operator:test-password", FLOWER_PORT=str(port),
               FLOWER_ADDRESS="127.0.0.1")
    auth = ("operator", "test-password")
    with ManagedProcess([sys.executable, "-m", "celery", "-A", "workers", "flower"], env, tmp_path / "flower.log",
                        ready_text="Visit me at"):
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/api/workers", timeout=10).status_code == 401  # basic auth is on
        workers = wait_until(lambda: requests.get(base + "/api/workers?refresh=1", auth=auth, timeout=20).json(),
                             timeout=30, interval=0.5, message="the worker in Flower")
        # Flower subscribes to task events a moment after it answers; keep sending until it shows one.
        order_id = 0

        def handled():
            nonlocal order_id
            order_id += 1
            deliver(web, order_created(2000 + order_id, order_id=order_id))
            time.sleep(0.5)
            tasks = requests.get(base + "/api/tasks", auth=auth, timeout=10).json()
            return [t for t in tasks.values()
                    if t["name"] == "workers.tasks.drain_intake" and t["state"] == "SUCCESS"]

        task = wait_until(handled, timeout=60, interval=0.5, message="the task in Flower")[0]
        assert task["worker"].startswith("worker@")
        assert any(name.startswith("worker@") for name in workers)
