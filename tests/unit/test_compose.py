"""docker-compose.yml: every service restarts by itself, RabbitMQ is the broker, Redis a switch away."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = ("web", "intake", "reads", "deliveries", "sweeper", "beat", "flower")
WORKERS = ("intake", "reads", "deliveries", "sweeper")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the x-app anchors and << merges


def test_every_service_has_a_restart_policy(compose):
    # A worker that exits (or a Redis that dies) is started again by Docker.
    for name, service in compose["services"].items():
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_rabbitmq_is_the_broker_the_drills_chose(compose):
    rabbitmq = compose["services"]["rabbitmq"]
    assert "profiles" not in rabbitmq
    assert rabbitmq["image"].startswith("rabbitmq:3")
    assert rabbitmq["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert "rabbitmq-data:/var/lib/rabbitmq" in rabbitmq["volumes"] and "rabbitmq-data" in compose["volumes"]
    assert rabbitmq["hostname"] == "rabbitmq"  # its data directory is named after the node
    assert all(not port.startswith(("5672", "0.0.0.0")) for port in rabbitmq.get("ports", []))


def test_the_broker_is_chosen_by_celery_broker_url(compose):
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["CELERY_BROKER_URL"] == "${CELERY_BROKER_URL:-amqp://guest:guest@rabbitmq:5672//}", name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert compose["services"][name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name


def test_a_worker_per_queue_with_the_procfiles_command(compose):
    """Queues by kind: each has its worker service, started exactly as the Procfile starts it."""
    from devkit.procfile import read_procfile

    # Compose gives each container its METRICS_PORT in the environment; the Procfile, running
    # them side by side on one host, a port per process in front of the command.
    procfile = {entry.name: re.sub(r"^(\w+=\S*\s+)+", "", entry.command) for entry in read_procfile(ROOT / "Procfile")}
    for name in WORKERS:
        assert compose["services"][name]["command"] == procfile[name], name
        assert compose["services"][name]["stop_grace_period"] == "60s", name
    assert "worker" not in compose["services"]
    queues = {word for name in WORKERS for option in [procfile[name].split()] for i, word in enumerate(option)
              if i and option[i - 1] == "-Q"}
    assert queues == {"intake,events", "reads", "deliveries", "sweep"}


def test_redis_keeps_its_append_only_file(compose):
    assert compose["services"]["redis"]["command"] == ["redis-server", "--appendonly", "yes"]


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed (apt-get install docker-compose)")
@pytest.mark.parametrize("env, profile, broker", [
    ({}, [], "amqp://guest:guest@rabbitmq:5672//"),
    ({"CELERY_BROKER_URL": "redis://redis:6379/0"}, [], "redis://redis:6379/0"),
])
def test_docker_compose_config_accepts_it(tmp_path, env, profile, broker):
    # Without a .env (compose reads ./.env of the project directory: use a copy in tmp_path).
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    result = subprocess.run(["docker-compose", *profile, "config"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env})
    assert result.returncode == 0, result.stderr
    assert f"CELERY_BROKER_URL: {broker}" in result.stdout
