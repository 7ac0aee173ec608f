"""Redis connections with short timeouts: a Redis outage must give a quick, clear error.

REDIS_CLUSTER=1 makes REDIS_URL a seed node of a Redis Cluster: the client is redis-py's
`RedisCluster`, which finds the other nodes and sends each command to the node of its keys'
slot. The code runs unchanged on both because of how the keys are laid out (service/state/keys.py):
every script and every atomic pipeline touches the keys of one hash tag only (one store, or
the due set), and the few writes that also touch a shared key (`stores`, `sync:backlog`) are
non-transactional pipelines, which a cluster splits by node.
"""
from __future__ import annotations

from urllib.parse import urlparse, urlunparse

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from service.config.settings import Settings


def connect(settings: Settings, fail_fast: bool = False) -> redis.Redis | RedisCluster:
    """fail_fast: for the webhook path, which must answer Salla 503 within a couple of seconds
    rather than spend redis-py's default retries (several seconds) on a dead server."""
    options = {"retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1)} if fail_fast else {}
    common = dict(socket_connect_timeout=2, socket_timeout=5, health_check_interval=30, decode_responses=True)
    if settings.redis_cluster:
        # A cluster has only database 0 (settings refuse any other), and redis-py's cluster
        # client refuses a `db` argument, which a /0 path would give it.
        return RedisCluster.from_url(urlunparse(urlparse(settings.redis_url)._replace(path="")), **common, **options)
    return redis.Redis.from_url(settings.redis_url, **common, **options)


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def pipelined_script(client, pipe, script, keys: list, args: list) -> None:
    """Queue a registered script on a pipeline. redis-py's cluster pipeline refuses EVALSHA
    (it cannot know which scripts each node has loaded) and has no eval() method (redis-py 8.1:
    "not implemented"), so there the script's text goes as a raw EVAL command: a few KB more per
    call, routed like any command to its keys' node."""
    if is_cluster(client):
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    else:
        script(keys=keys, args=args, client=pipe)
