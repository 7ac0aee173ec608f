"""REDIS_CLUSTER=1: what a Redis Cluster cannot do is refused at start-up, naming the fix."""
import subprocess
import sys

import pytest
from redis.cluster import RedisCluster

from service.state.redis_client import connect, is_cluster
from service.config.settings import Settings, SettingsError
from tests.conftest import TOKEN_KEY

BASE = {"TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SALLA_WEBHOOK_SECRET": "x"}
CLUSTER = {**BASE, "REDIS_CLUSTER": "1", "REDIS_URL": "redis://127.0.0.1:7000"}


def test_off_by_default():
    assert Settings.from_env(BASE).redis_cluster is False


def test_cluster_with_a_separate_broker():
    for broker in ("amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/3", "redis://10.0.0.9:7000/0"):
        settings = Settings.from_env({**CLUSTER, "CELERY_BROKER_URL": broker})
        assert settings.redis_cluster and settings.broker_url == broker and settings.redis_url == CLUSTER["REDIS_URL"]


def test_cluster_without_a_broker_stops_with_a_clear_message():
    with pytest.raises(SettingsError, match="REDIS_CLUSTER=1 needs CELERY_BROKER_URL.*RabbitMQ.*plain"):
        Settings.from_env(CLUSTER)


def test_the_cluster_itself_is_no_broker():
    with pytest.raises(SettingsError, match="cluster's own node"):
        Settings.from_env({**CLUSTER, "CELERY_BROKER_URL": "redis://127.0.0.1:7000/0"})


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:7000/3", "only database 0.*REDIS_KEY_PREFIX"),
    ("unix:///run/redis.sock", "redis://host:port"),
])
def test_what_a_cluster_cannot_be(url, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**CLUSTER, "REDIS_URL": url, "CELERY_BROKER_URL": "amqp://127.0.0.1//"})


@pytest.mark.parametrize("value", ["2", "maybe"])
def test_the_flag_is_a_flag(value):
    with pytest.raises(SettingsError, match="REDIS_CLUSTER='?%s'? must be 1 or 0" % value):
        Settings.from_env({**BASE, "REDIS_CLUSTER": value})


def test_connect_picks_the_cluster_client_without_touching_the_network(monkeypatch):
    seen = {}

    def from_url(url, **options):
        seen.update(url=url, **options)
        return RedisCluster.__new__(RedisCluster)

    monkeypatch.setattr(RedisCluster, "from_url", staticmethod(from_url))
    settings = Settings.from_env({**CLUSTER, "REDIS_URL": "redis://127.0.0.1:7000/0", "CELERY_BROKER_URL": "amqp://h//"})
    assert is_cluster(connect(settings))
    assert seen["url"] == "redis://127.0.0.1:7000"  # no /0: redis-py's cluster client refuses a db
    assert seen["decode_responses"] is True and seen["socket_timeout"] == 5
    assert not is_cluster(connect(Settings.from_env(BASE)))


def test_a_worker_does_not_start_on_a_cluster_without_a_broker():
    """The Celery app reads settings at import: the worker process stops before taking a task."""
    env = {"PATH": "/usr/bin:/bin", **CLUSTER}
    result = subprocess.run([sys.executable, "-c", "import workers.celery"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "REDIS_CLUSTER=1 needs CELERY_BROKER_URL" in result.stderr
