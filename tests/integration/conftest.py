"""Real parts: a real Redis, a real `celery worker` process, the Salla sandbox over real HTTP.

Redis: REDIS_URL if a server answers there (the tests use their own database number,
TEST_REDIS_DB, default 14, and 13 for the second pytest-xdist worker, and empty only that
database), else a throwaway redis-server started here and stopped after the session.
"""
from __future__ import annotations

import os
import time
from urllib.parse import urlparse, urlunparse

import pytest
import redis

from devkit.processes import celery_beat, celery_worker
from devkit.receiver import ReminderLog, create_receiver
from devkit.redis_server import RedisServer, redis_answers
from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from service.web.app import create_app
from service.config.settings import Settings
from tests.conftest import TOKEN_KEY, WEBHOOK_SECRET

SANDBOX_TOKEN = "sandbox-token"
REMINDER_SECRET = "reminder-secret"


def _with_db(url: str, db: int) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{db}"))


def database_number() -> int:
    """TEST_REDIS_DB (14), minus the pytest-xdist worker's number: `make test` runs two workers
    (gw0, gw1), each on a database of its own, so each can empty its own between tests."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(os.environ.get("TEST_REDIS_DB", "14")) - int(worker.removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    db = database_number()
    configured = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    server = None
    if not redis_answers(configured):
        server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
        configured = server.url
    url = _with_db(configured, db)
    client = redis.Redis.from_url(url)
    client.flushdb()  # our own database number only, never FLUSHALL
    yield url
    client.flushdb()
    client.close()
    if server:
        server.stop()


@pytest.fixture(autouse=True)
def _own_database_is_empty(request):
    """Every integration test starts with an empty test database (the review found a test
    that saw the previous test's dedupe key)."""
    if "redis_url" in request.fixturenames or any(f in request.fixturenames for f in ("web", "worker", "store")):
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        client.flushdb()
        client.close()


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def sandbox():
    app = create_sandbox(token=SANDBOX_TOKEN)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def reminders():
    log = ReminderLog(REMINDER_SECRET)
    with serve_in_thread(create_receiver(log)) as server:
        log.url = server.url + "/reminders"
        yield log


@pytest.fixture
def service_env(redis_url, sandbox, reminders):
    """The environment every process of the service gets in these tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALLA_", "REMINDER_", "CELERY_", "TOKEN_"))}
    env.update({
        "REDIS_URL": redis_url,
        "SALLA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
        "SALLA_API_BASE_URL": sandbox.url,
        "SALLA_ACCESS_TOKEN": SANDBOX_TOKEN,
        "SALLA_HTTP_TIMEOUT_SECONDS": "5",
        "SYNC_DEBOUNCE_SECONDS": "0.5",
        # Reminders go out at any hour here; quiet hours have tests of their own.
        "QUIET_HOURS": "off",
        # Delivery retries and held reminders come back through beat's sweep: tick often here.
        "SWEEP_INTERVAL_SECONDS": "1",
        "REMINDER_CHANNELS": "log,webhook",
        "REMINDER_WEBHOOK_URL": reminders.url,
        "REMINDER_WEBHOOK_SECRET": REMINDER_SECRET,
        # These tests count each store's reads; the backfill has a test of its own.
        "BACKFILL_ON_AUTHORIZE": "off",
        # The receivers and the providers' fakes listen on 127.0.0.1 over http://; a store may set
        # them as its channels only with this (local development; tests/unit/test_public_addresses.py
        # shows such addresses refused without it).
        "ALLOW_PRIVATE_URLS": "1",
    })
    return env


@pytest.fixture
def web(service_env):
    """The Flask app behind a real HTTP server, configured like the worker."""
    app = create_app(Settings.from_env(service_env))
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def worker(service_env, tmp_path):
    process = celery_worker(service_env, tmp_path / "worker.log", concurrency=1).start()
    yield process
    process.stop()
    assert process.process.returncode is not None


@pytest.fixture
def beat(service_env, tmp_path):
    process = celery_beat(service_env, tmp_path / "beat.log", tmp_path / "beat-schedule").start()
    yield process
    process.stop()


def wait_until(predicate, timeout=30.0, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
