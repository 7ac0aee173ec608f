"""The worker process's long-lived parts, built on first use.

Built lazily, so that each prefork child makes its own Redis and HTTP connections after the
fork instead of sharing the parent's sockets.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis
import requests

from service.redis_client import connect
from service.settings import Settings
from workers.channels import build_channels
from workers.salla_client import SallaClient


@dataclass
class Runtime:
    settings: Settings
    store: redis.Redis
    client: SallaClient
    channels: list


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = Settings.from_env()
    session = requests.Session()
    return Runtime(
        settings=settings,
        store=connect(settings),
        client=SallaClient(settings.salla_api_base_url, session, settings.salla_http_timeout_seconds, settings.salla_page_size),
        channels=build_channels(settings, session),
    )
