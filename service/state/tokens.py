"""Per-store Salla OAuth tokens, encrypted at rest in Redis.

Fernet (AES-128-CBC + HMAC) with MultiFernet: TOKEN_ENCRYPTION_KEY holds one or more keys,
the first encrypts and all decrypt, so a key can be rotated without losing stored tokens
(`python -m service.cli rotate-token-keys` re-encrypts everything under the first key).
Nothing in this module logs a token; StoreTokens' repr hides them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import redis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.state.keys import Keys

log = logging.getLogger(__name__)

# A number this large is a unix timestamp, a smaller one a duration in seconds: Salla's
# answers name the expiry `expires_in` (seconds) or `expires` (seen as a timestamp).
_EPOCH_THRESHOLD = 10**9


LOCK_SECONDS = 60  # longer than one refresh call can take (its timeout), with margin
LOCK_WAIT_SECONDS = 20


def token_lock(store: redis.Redis, prefix: str, merchant_id: int, wait: float = LOCK_WAIT_SECONDS):
    """The per-store lock held by whatever writes a store's tokens: a refresh, an authorize
    webhook, a key rotation. Single-use refresh tokens make any lost update a revoked store."""
    return store.lock(Keys(prefix).store(merchant_id).token_lock, timeout=LOCK_SECONDS, blocking_timeout=wait)


class TokenError(ValueError):
    """Token data we cannot use (missing fields in an authorize event, undecryptable record)."""


@dataclass(frozen=True)
class StoreTokens:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    scope: str = ""

    def expires_within(self, seconds: float, now: float) -> bool:
        return self.expires_at - now <= seconds

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope.split()


_LATEST = 253402300799.0  # 9999-12-31: past it, a number is no expiry anyone meant


def _seconds(value) -> float | None:
    """A positive, finite number of seconds (or epoch), from a number or ASCII digits; else None
    (a signed webhook may still carry 1e400, "²" or 5,000 digits: no 500 for those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 12:
            return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if 0 < number <= _LATEST else None


def expiry_from(answer: dict, now: float) -> float:
    """Absolute expiry from an OAuth answer or authorize event (`expires_in` or `expires`)."""
    for name in ("expires_in", "expires"):
        number = _seconds(answer.get(name))
        if number is not None:
            return number if number >= _EPOCH_THRESHOLD else now + number
    # Salla documents 14 days; assume less so we refresh early rather than late.
    return now + 7 * 24 * 3600


def tokens_from(answer: dict, now: float) -> StoreTokens:
    access, refresh = answer.get("access_token"), answer.get("refresh_token")
    if not isinstance(access, str) or not access:
        raise TokenError("access_token is missing")
    return StoreTokens(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) else "",
        expires_at=expiry_from(answer, now),
        scope=answer.get("scope") if isinstance(answer.get("scope"), str) else "",
    )


class TokenStore:
    def __init__(self, store: redis.Redis, prefix: str, keys: tuple[str, ...] | list[str]):
        self._redis = store
        self._prefix = prefix
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def _key(self, merchant_id: int) -> str:
        return Keys(self._prefix).store(merchant_id).tokens

    def save(self, merchant_id: int, tokens: StoreTokens) -> None:
        record = json.dumps({"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
                             "expires_at": tokens.expires_at, "scope": tokens.scope})
        # Not a transaction: `stores` is in another cluster slot than the store's tokens; an
        # index entry without tokens (a failed write) is what rotate_all already skips.
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._key(merchant_id), self._fernet.encrypt(record.encode()))
        pipe.sadd(Keys(self._prefix).stores, merchant_id)  # rotate_all walks this set
        pipe.execute()

    def load(self, merchant_id: int) -> StoreTokens | None:
        blob = self._redis.get(self._key(merchant_id))
        if blob is None:
            return None
        try:
            record = json.loads(self._fernet.decrypt(blob if isinstance(blob, bytes) else blob.encode()))
        except InvalidToken:
            raise TokenError(f"tokens of merchant {merchant_id} cannot be decrypted with TOKEN_ENCRYPTION_KEY "
                             "(was a key removed before rotate-token-keys ran?)") from None
        return StoreTokens(record["access_token"], record["refresh_token"], float(record["expires_at"]), record.get("scope", ""))

    def delete(self, merchant_id: int) -> bool:
        return bool(self._redis.delete(self._key(merchant_id)))

    def rotate_all(self) -> int:
        """Re-encrypt every stored record under the first key, each under its store's token
        lock (a refresh in between must not be overwritten with spent tokens)."""
        return sum(self.rotate(int(merchant)) for merchant in self._redis.smembers(Keys(self._prefix).stores))

    def rotate(self, merchant_id: int, dry_run: bool = False) -> bool:
        """Re-encrypt one store's record under the first key; False when it has none. dry_run:
        only decrypt it (InvalidToken when no key can: the rotation would fail on it)."""
        key = self._key(merchant_id)
        if dry_run:
            blob = self._redis.get(key)
            if blob is not None:
                self._fernet.decrypt(blob if isinstance(blob, bytes) else blob.encode())
            return blob is not None
        with token_lock(self._redis, self._prefix, merchant_id):
            blob = self._redis.get(key)
            if blob is None:
                return False
            self._redis.set(key, self._fernet.rotate(blob if isinstance(blob, bytes) else blob.encode()))
            return True
