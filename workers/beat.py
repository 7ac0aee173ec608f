"""Beat's own liveness: the scheduler writes `beat:alive` (the time, unix seconds) to Redis as it
ticks, at most every BEAT_ALIVE_EVERY_SECONDS.

`beat:last` (the heartbeat task) says more and less: a worker wrote it, so it also needs the
broker and the sweep worker to be up. With both, /admin/health and the metrics tell "beat is down"
(beat:alive old) from "beat ticks but nothing runs its tasks" (beat:alive fresh, beat:last old).
Configured as `beat_scheduler` in service/config/celery_config.py, so `celery -A workers beat` needs
no extra option.
"""
from __future__ import annotations

import logging
import time

import redis
from celery.beat import PersistentScheduler

log = logging.getLogger(__name__)
BEAT_ALIVE_EVERY_SECONDS = 5.0


class LivenessScheduler(PersistentScheduler):
    # Beat sleeps at most this long between ticks (Celery's default is 300 s with some
    # schedulers): the liveness key is then never older than a few seconds while beat runs.
    max_interval = BEAT_ALIVE_EVERY_SECONDS

    def __init__(self, *args, **kwargs):
        self._alive_written = 0.0
        self._redis = None
        self._key = None
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):
        wait = super().tick(*args, **kwargs)
        self.write_alive(time.time())
        return min(wait, BEAT_ALIVE_EVERY_SECONDS)

    def write_alive(self, now: float) -> None:
        if now - self._alive_written < BEAT_ALIVE_EVERY_SECONDS:
            return
        try:
            if self._redis is None:
                from service.state.keys import Keys
                from service.state.redis_client import connect
                from service.config.settings import Settings

                settings = Settings.from_env()
                self._redis, self._key = connect(settings), Keys(settings.redis_key_prefix).beat_alive
            self._redis.set(self._key, f"{now:.3f}")
            self._alive_written = now
        except redis.RedisError as exc:  # Redis down: beat keeps scheduling; /admin/health shows the age
            log.warning("beat: could not record its liveness in Redis (%s)", type(exc).__name__)
