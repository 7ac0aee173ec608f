"""A guard for a kombu Redis-transport bug that kills the Celery worker when Redis restarts.

What happens (celery 5.7.0, kombu 5.7.0, redis-py 8.1; reproduced by
tests/integration/test_brokers.py::test_kombu_still_needs_the_guard, step by step):
when the worker loses its Redis broker, `Consumer.on_connection_error_after_connected` calls
`connection.collect()` and then `connection.close()` (celery#10242 added that close).
1. collect() closes the task channel. A BRPOP is in flight, so `Channel.close()` first reads its
   reply (`_brpop_read`, added by kombu#1733); the dead socket raises ConnectionError there,
   before the channel is marked closed. Closing the next channel needs Redis too (remote
   control deletes its fanout queue) and fails, which ends the transport's close before it
   comes back to the task channel; collect() then detaches the transport (`client = None`).
2. close() closes the half-closed task channel again. Now it gets as far as restoring its
   unacknowledged messages ("Restoring N unacknowledged message(s)"), which needs a new Redis
   pool, whose parameters come from `transport.client.hostname`: AttributeError. Celery only
   ignores connection errors there, so the worker logs
   `CRITICAL Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")`
   and exits 1, and nothing is consumed any more.
The same detached channel is used later when a task that was running during the outage is
acknowledged, with the same AttributeError (logged as "Pool callback raised exception").

The guard: a channel whose transport has been detached raises redis' ConnectionError, which is
what every caller above expects from a dead broker and handles (ignore_errors, "Couldn't ack").
Nothing is lost by it: with the Redis transport an unacknowledged message stays in Redis (the
`unacked` hash) and is restored by a live worker after the visibility timeout
(service/config/celery_config.py). Closest upstream reports: kombu#582 and kombu#970 (the same
AttributeError from a close after the transport was gone); none for this exact path.

Installed by service.config.celery_config.celery_config() for a Redis broker; harmless if kombu fixes
the bug (the branch is then never taken).
"""
from __future__ import annotations

import logging

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_original_connparams = kombu_redis.Channel._connparams


def _connparams_of_a_live_transport(self, asynchronous=False):
    if self.connection.client is None:
        log.warning("Redis broker: a channel of a closed connection was used (kombu bug, guarded); its "
                    "unacknowledged messages come back after the visibility timeout")
        raise redis.exceptions.ConnectionError("the broker connection of this channel was closed")
    return _original_connparams(self, asynchronous=asynchronous)


def guard_detached_redis_channels() -> None:
    """Idempotent: patch kombu's Redis Channel once per process."""
    if kombu_redis.Channel._connparams is not _connparams_of_a_live_transport:
        kombu_redis.Channel._connparams = _connparams_of_a_live_transport


def guarded() -> bool:
    return kombu_redis.Channel._connparams is _connparams_of_a_live_transport


# -- one Redis client per channel for publishing ---------------------------------------------
# kombu's Redis transport builds a new redis.Redis object for every publish, ack and queue-size
# call (`Channel.conn_or_acquire` -> `_create_client`). With redis-py 8 that constructor is most
# of a publish's Python time (its response-callback tables are rebuilt each time): bench/workers.py
# measured it as the largest single cost of the reads worker, whose pump publishes one task per
# read. A redis.Redis object is thread-safe (each command borrows a connection from the pool), so
# one per channel and pool serves every caller; a new pool (after a reconnect) gets a new client.
_original_create_client = kombu_redis.Channel._create_client


def _create_client_once_per_pool(self, asynchronous=False):
    if asynchronous:
        return _original_create_client(self, asynchronous=True)
    pool = self.pool
    cached = self.__dict__.get("_lpr_client")
    if cached is None or cached[0] is not pool:
        cached = (pool, _original_create_client(self))
        self.__dict__["_lpr_client"] = cached
    return cached[1]


def reuse_redis_clients() -> None:
    """Idempotent: patch kombu's Redis Channel once per process."""
    if kombu_redis.Channel._create_client is not _create_client_once_per_pool:
        kombu_redis.Channel._create_client = _create_client_once_per_pool
