"""What a Salla 403 on the loyalty endpoint means: a temporary block, or no Customer Loyalty app.

Salla's Responses page (docs.salla.dev/421123m0) defines 403 `forbidden` as "refusing it
(blocked due to many errors in particular time) or the access is not allowed"; it publishes
no body for either, nor for a store without the Customer Loyalty app. So the answer's own
words decide first, and the store's history second:
- words of a block (blocked, temporarily, too many, try again...): a short hold, nothing dropped;
- words naming the app, the loyalty feature or a subscription: the app is missing;
- anything else (a bare "forbidden", "access is not allowed"): a store that has answered
  the loyalty endpoint before surely still has the app, so it is a block; a store that never
  answered is taken to lack the app (the reading this service always had).
A pure function: tests/unit/test_salla_refusals.py runs it over Salla's documented bodies
(tests/fixtures/salla/samples/errors.json).
"""
from __future__ import annotations

import re

BLOCKED, NO_LOYALTY_APP = "blocked", "no_loyalty_app"
# A store Salla blocked is not asked again for this long; its reads (and a backfill's page) wait
# it out in line. Salla gives no duration; five minutes costs one request per store per hold if
# the block lasts.
FORBIDDEN_HOLD_SECONDS = 300

_BLOCK_WORDS = re.compile(r"block|temporar|too many|many errors|try again|later|throttl|rate limit"
                          r"|محظور|حظر|مؤقت|لاحق|كثرة", re.IGNORECASE)
_APP_WORDS = re.compile(r"\b(loyalty|apps?|application|install(ed)?|feature|subscri\w*)\b"
                        r"|الولاء|تطبيق|مثبت|اشتراك", re.IGNORECASE)


def forbidden_reason(code: str | None, message: str | None, answered_before: bool) -> str:
    """BLOCKED or NO_LOYALTY_APP for one 403 (see the module docstring)."""
    text = f"{code or ''} {message or ''}"
    if _BLOCK_WORDS.search(text):
        return BLOCKED
    if _APP_WORDS.search(text):
        return NO_LOYALTY_APP
    return BLOCKED if answered_before else NO_LOYALTY_APP
