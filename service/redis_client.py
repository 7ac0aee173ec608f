"""Redis connections with short timeouts: a Redis outage must give a quick, clear error."""
from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.settings import Settings


def connect(settings: Settings, fail_fast: bool = False) -> redis.Redis:
    """fail_fast: for the webhook path, which must answer Salla 503 within a couple of seconds
    rather than spend redis-py's default retries (several seconds) on a dead server."""
    options = {"retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1)} if fail_fast else {}
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        decode_responses=True,
        **options,
    )
