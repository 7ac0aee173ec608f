"""How long a task waits before retrying a transient failure. A pure function."""
from __future__ import annotations

import random

from service.celery_config import MAX_TASK_COUNTDOWN_SECONDS

# Every countdown stays well under the broker's visibility timeout, so a waiting task is
# never re-delivered as if its worker had died.
MAX_COUNTDOWN_SECONDS = MAX_TASK_COUNTDOWN_SECONDS


def retry_countdown(retries: int, retry_after: float | None = None, base: float = 2.0,
                    cap: float = MAX_COUNTDOWN_SECONDS, rand=random.random) -> float:
    """Exponential backoff with full jitter; never sooner than the server's Retry-After."""
    ceiling = min(cap, base * (2 ** max(retries, 0)))
    delay = ceiling / 2 + rand() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
