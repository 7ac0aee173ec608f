"""The worker process's long-lived parts, built on first use.

Built lazily, so that each prefork child makes its own Redis and HTTP connections after the
fork instead of sharing the parent's sockets. Tests build one from fakes with `build_runtime`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
import requests

from service.state.alarms import Alarms
from service.state.intake import Intake
from service.state.keys import Keys
from service.state.redis_client import connect
from service.config.settings import Settings, channel_claim_seconds
from service.state.stores import StoreRegistry
from service.state.tokens import TokenStore
from service.state.budget import Budget, Limits
from service.clients.channels import ChannelDirectory
from service.state.due_set import DueSet
from service.state.ledger import Ledger
from service.clients.oauth import TokenProvider
from service.state.profiles import Profiles
from service.state.last_read import LastRead
from service.clients.salla_client import SallaClient


@dataclass
class Runtime:
    settings: Settings
    store: redis.Redis
    client: SallaClient
    directory: ChannelDirectory
    tokens: TokenStore
    registry: StoreRegistry
    budget: Budget
    provider: TokenProvider
    profiles: Profiles
    ledger: Ledger
    due: DueSet
    keys: Keys
    alarms: Alarms
    intake: Intake
    last_read: LastRead  # the customer's last read, kept in their profile (service/state/last_read.py)
    clock: object = time.time
    channels: list | None = None  # tests only: these channels, policy `all`, for every store
    # Pump this store now (a store given a backfill slot starts at once, not at beat's next
    # pump-backlog); None: beat's tick does it. runtime() sets it to what the workers registered
    # with `wake_with` (workers/tasks.py: pump_soon).
    wake: object = None

    def channels_for(self, merchant_id: int) -> tuple[list, str]:
        """The store's channels in its order, and its policy (`first` or `all`); built from its
        settings and kept a few seconds (service/clients/channels.py)."""
        if self.channels is not None:
            return self.channels, "all"
        return self.directory.for_store(merchant_id)

    def limits(self, merchant_id: int, config: dict | None = None) -> Limits:
        """The store's budget; `config`: its settings when the caller has read them already."""
        s = self.settings
        config = self.registry.config(merchant_id) if config is None else config
        return Limits(plan_limit=config.get("plan_limit", s.plan_limit),
                      plan_window=s.plan_window_seconds, customer_limit=s.customer_limit,
                      customer_window=s.customer_window_seconds)


def build_runtime(settings: Settings, store: redis.Redis, session: requests.Session, clock=time.time) -> Runtime:
    prefix = settings.redis_key_prefix
    tokens = TokenStore(store, prefix, settings.token_encryption_keys)
    registry = StoreRegistry(store, prefix)
    return Runtime(
        settings=settings,
        store=store,
        client=SallaClient(settings.salla_api_base_url, session, settings.salla_http_timeout_seconds, settings.salla_page_size),
        directory=ChannelDirectory(settings, store, session, registry),
        tokens=tokens,
        registry=registry,
        budget=Budget(store, prefix),
        provider=TokenProvider(settings, store, tokens, registry, session, clock=clock),
        profiles=Profiles(store, prefix, settings.data_retention_days * 86400, secrets=settings.token_encryption_keys),
        ledger=Ledger(store, prefix, claim_seconds=channel_claim_seconds(settings.salla_http_timeout_seconds)),
        due=DueSet(store, prefix, shards=settings.due_set_shards),
        keys=Keys(prefix),
        alarms=Alarms(store, prefix),
        intake=Intake(store, prefix),
        last_read=LastRead(store, prefix, settings.data_retention_days * 86400),
        clock=clock,
    )


_local = threading.local()


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def runtime() -> Runtime:
    """This thread's runtime. A prefork child has one thread; a `--pool=threads` worker has one
    runtime per thread, so no HTTP session (requests.Session is not thread-safe) or cached
    channel is shared between threads. Redis clients are cheap and made after the fork."""
    current = getattr(_local, "runtime", None)
    if current is None:
        settings = _settings()
        current = _local.runtime = build_runtime(settings, connect(settings), requests.Session())
        current.wake = _wake
    return current


# Set by workers/tasks.py when it loads (service never imports workers: the tie is this hook).
_wake = None


def wake_with(pump) -> None:
    """The workers' "pump this store now", given to every runtime built from then on."""
    global _wake
    _wake = pump
