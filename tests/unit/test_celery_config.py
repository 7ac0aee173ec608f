"""The broker: which URLs are accepted, the transport options each kind gets, and the web's 503
when the broker is down (a real kombu producer against a closed port; Redis is fakeredis)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import fakeredis
import pytest
import redis

from devkit.redis_server import free_port
from service.web.app import create_app
from service.config.celery_config import (MAX_TASK_COUNTDOWN_SECONDS, REDIS_RESTORE_INTERVAL_SECONDS,
                                   VISIBILITY_TIMEOUT_SECONDS, broker_is_redis, celery_config,
                                   kombu_broker_url)
from service.clients.queue import EventQueue, QueueUnavailable
from service.config.settings import SettingsError
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, make_settings, sample_bytes


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/1",
    "rediss://:secret@redis.example.com:6380/0",
    "unix:///run/redis/redis.sock?db=2",
    "amqp://guest:guest@127.0.0.1:5672//",
    "amqps://user:pw@mq.example.com:5671/lpr",
    "pyamqp://guest:guest@rabbitmq:5672/",
])
def test_the_broker_url_may_be_redis_or_rabbitmq(url):
    assert make_settings(CELERY_BROKER_URL=url).broker_url == url


def test_the_broker_defaults_to_redis_url():
    settings = make_settings(REDIS_URL="redis://cache:6379/3")
    assert settings.broker_url == "redis://cache:6379/3"


@pytest.mark.parametrize("url", ["sqs://", "http://127.0.0.1:5672", "127.0.0.1:5672", "amqp:/nohost"])
def test_other_broker_urls_stop_the_process_naming_the_variable(url):
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL"):
        make_settings(CELERY_BROKER_URL=url)


def test_the_state_store_stays_redis():
    with pytest.raises(SettingsError, match="REDIS_URL"):
        make_settings(REDIS_URL="amqp://guest:guest@127.0.0.1:5672//")


def test_unix_socket_urls_are_spelled_for_kombu():
    assert kombu_broker_url("unix:///run/redis.sock?db=2") == "redis+socket:///run/redis.sock?virtual_host=2"
    assert kombu_broker_url("unix:///run/redis.sock") == "redis+socket:///run/redis.sock"
    assert kombu_broker_url("redis://h:6379/1") == "redis://h:6379/1"
    assert kombu_broker_url("amqp://g:g@h:5672//") == "amqp://g:g@h:5672//"
    conf = celery_config(make_settings(REDIS_URL="unix:///run/redis.sock?db=2"))
    assert conf["broker_url"] == "redis+socket:///run/redis.sock?virtual_host=2"


def test_redis_broker_options_are_pinned():
    # A killed worker's messages are back in the queue within ~70 s, so its work resumes
    # within the two minutes promised; any countdown fits well inside the visibility timeout.
    conf = celery_config(make_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/1"))
    assert conf["broker_url"] == "redis://127.0.0.1:6379/1"
    assert conf["broker_transport_options"] == {
        "visibility_timeout": 60,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 30,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
    options = conf["broker_transport_options"]
    assert VISIBILITY_TIMEOUT_SECONDS == 60 and REDIS_RESTORE_INTERVAL_SECONDS == 5
    assert options["visibility_timeout"] + options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 70
    assert MAX_TASK_COUNTDOWN_SECONDS == 30
    assert 2 * MAX_TASK_COUNTDOWN_SECONDS <= VISIBILITY_TIMEOUT_SECONDS


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672//", "amqps://u:p@mq:5671/v", "pyamqp://rabbitmq/"])
def test_rabbitmq_broker_options_are_pinned(url):
    conf = celery_config(make_settings(CELERY_BROKER_URL=url))
    assert conf["broker_url"] == url
    # Publisher confirms; nothing Redis-specific (RabbitMQ redelivers as soon as a worker's
    # connection drops, without a visibility timeout).
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert not broker_is_redis(url)


def test_the_rest_does_not_depend_on_the_broker():
    redis_conf = celery_config(make_settings())
    amqp_conf = celery_config(make_settings(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//"))
    for conf in (redis_conf, amqp_conf):
        assert conf["task_acks_late"] is True and conf["task_reject_on_worker_lost"] is True
        assert conf["worker_prefetch_multiplier"] == 1 and conf["task_default_queue"] == "intake"
    differing = {k for k in redis_conf if redis_conf[k] != amqp_conf[k]}
    assert differing == {"broker_url", "broker_transport_options"}


def test_a_redis_broker_installs_the_kombu_guard():
    from service.config import kombu_workarounds

    celery_config(make_settings())
    assert kombu_workarounds.guarded()
    # A channel whose transport was detached (Connection.collect) raises a connection error,
    # which Celery handles, instead of the AttributeError that killed the worker.
    detached = SimpleNamespace(connection=SimpleNamespace(client=None))
    from kombu.transport import redis as kombu_redis
    with pytest.raises(redis.exceptions.ConnectionError):
        kombu_redis.Channel._connparams(detached)


def test_the_web_producer_gives_up_quickly():
    conf = EventQueue(make_settings())._celery.conf
    assert conf.broker_connection_timeout == 1
    assert conf.broker_transport_options["max_retries"] == 1
    assert conf.broker_transport_options["socket_timeout"] == 2
    amqp = EventQueue(make_settings(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//"))._celery.conf
    assert amqp.broker_transport_options["confirm_publish"] is True
    assert amqp.broker_transport_options["read_timeout"] == 2 and amqp.broker_transport_options["write_timeout"] == 2


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_dead_broker_is_a_503_within_3_seconds_and_the_retry_is_accepted(scheme):
    port = free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{port}//"
    store = fakeredis.FakeRedis(decode_responses=True)
    client = create_app(make_settings(CELERY_BROKER_URL=url), redis_client=store).test_client()
    body = sample_bytes("order.created.json")
    headers = {"X-Salla-Signature": sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
    for _ in range(2):  # and again: the producer does not get slower after a failure
        started = time.monotonic()
        response = client.post("/webhooks/salla", data=body, headers=headers)
        assert response.status_code == 503, response.get_json()
        assert time.monotonic() - started < 3
        # The dedupe key was removed, so Salla's retry is not taken for a repeat.
        assert store.keys("*:seen:*") == []


def test_enqueue_failure_is_queue_unavailable():
    queue = EventQueue(make_settings(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//"))
    with pytest.raises(QueueUnavailable, match="OperationalError"):
        queue.enqueue({"event": "order.created"})


def test_a_redis_broker_channel_reuses_one_client_per_pool():
    """kombu builds a redis.Redis per publish (the reads worker's largest cost, bench/workers.py);
    the workaround keeps one per channel, and a new one once the channel's pool is replaced."""
    from kombu.transport import redis as kombu_redis

    celery_config(make_settings())

    class FakeChannel:
        Client = redis.Redis

        def __init__(self):
            self.pool = redis.ConnectionPool()

    channel = FakeChannel()
    first = kombu_redis.Channel._create_client(channel)
    assert kombu_redis.Channel._create_client(channel) is first
    assert first.connection_pool is channel.pool
    channel.pool = redis.ConnectionPool()  # a reconnect: kombu makes a new pool
    second = kombu_redis.Channel._create_client(channel)
    assert second is not first and second.connection_pool is channel.pool
    other = FakeChannel()
    assert kombu_redis.Channel._create_client(other) is not second
