"""How long to wait before trying a transient failure again. A pure function."""
from __future__ import annotations

import random

from service.config.celery_config import MAX_TASK_COUNTDOWN_SECONDS  # noqa: F401  (re-exported for the tasks)

# Waits held in Redis (a read back in the store's queue, a delivery's timer in the due set)
# may be long. Waits held by the broker (a task's retry countdown) never pass
# MAX_TASK_COUNTDOWN_SECONDS (service/config/celery_config.py says why).
MAX_BACKOFF_SECONDS = 900


def retry_countdown(retries: int, retry_after: float | None = None, base: float = 2.0,
                    cap: float = MAX_BACKOFF_SECONDS, rand=random.random) -> float:
    """Exponential backoff with full jitter; never sooner than the server's Retry-After."""
    ceiling = min(cap, base * (2 ** max(retries, 0)))
    delay = ceiling / 2 + rand() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
