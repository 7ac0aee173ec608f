"""Random keys of the deployment, one per purpose, that outlive a rotation of TOKEN_ENCRYPTION_KEY.

Some keyed hashes must give the same answer for good: the holdout's assignment (a customer
must never switch group), the suppression list, and the unsubscribe links and SMS report
URLs (`links`: they sit in sent messages and in providers' consoles). Deriving their key from
TOKEN_ENCRYPTION_KEY would tie them to a key that operators rotate (`new,old`, then
`python -m service.cli rotate-token-keys`, then drop `old`). So each purpose gets a random
32-byte key, generated once (SET NX: the first process to ask wins, every other one reads it),
kept in Redis (service/state/keys.py `secret:<purpose>`) encrypted with the token keys as the tokens
are (MultiFernet: the first key encrypts, every listed one decrypts), and re-encrypted by
`rotate-token-keys` along with them. The key itself never changes; only its wrapping does.

`secret` caches what it read in the process: the value never changes, and the holdout's hash is
on hot paths. `current` reads Redis each time (one GET; the decryption is cached by what it
read), for the suppression list: a process that kept a key its Redis no longer holds (a test's
emptied database, a restore) must never look an opt-out up under the wrong key.
"""
from __future__ import annotations

import os
import re
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.state.keys import Keys

KEY_BYTES = 32
_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_cache: dict[tuple[str, str], bytes] = {}
_lock = threading.Lock()


class SecretError(RuntimeError):
    """A stored secret that none of the listed token keys decrypts (a key dropped too early)."""


def _fernet(fernet_keys) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in fernet_keys])


def _check(purpose: str) -> None:
    if not _PURPOSE.match(purpose or ""):
        raise ValueError(f"a secret's purpose is a short lower-case word, got {purpose!r}")


def secret(redis, prefix: str, fernet_keys, purpose: str) -> bytes:
    """The deployment's key for `purpose`: created on first use, the same ever after."""
    _check(purpose)
    name = Keys(prefix).deployment_secret(purpose)
    found = _cache.get((prefix, purpose))
    if found is not None:
        return found
    with _lock:
        fernet = _fernet(fernet_keys)
        # NX: two processes starting together must not each keep a key of their own.
        redis.set(name, fernet.encrypt(os.urandom(KEY_BYTES)), nx=True)
        blob = redis.get(name)
        try:
            value = fernet.decrypt(blob if isinstance(blob, bytes) else blob.encode())
        except InvalidToken:
            raise SecretError(f"the deployment secret {purpose!r} cannot be decrypted with TOKEN_ENCRYPTION_KEY "
                              "(was a key removed before rotate-token-keys ran?)") from None
        _cache[(prefix, purpose)] = value
        return value


def rotate_all(redis, prefix: str, fernet_keys, dry_run: bool = False) -> int:
    """Re-encrypt every stored secret under the first key (rotate-token-keys); how many.
    `dry_run`: only check that each one decrypts."""
    fernet, count = _fernet(fernet_keys), 0
    for name in redis.scan_iter(match=Keys(prefix).deployment_secret("*"), count=100):
        blob = redis.get(name)
        if blob is None:
            continue
        try:
            rotated = fernet.rotate(blob if isinstance(blob, bytes) else blob.encode())
            if not dry_run:
                redis.set(name, rotated)
        except InvalidToken:
            raise SecretError(f"{name if isinstance(name, str) else name.decode()} cannot be decrypted with any "
                              "key of TOKEN_ENCRYPTION_KEY; put the old key back and run this again") from None
        count += 1
    return count


_decrypted: dict[bytes, bytes] = {}


def current(redis, prefix: str, fernet_keys, purpose: str) -> bytes:
    """The deployment's key for `purpose`, as Redis holds it now (created on first use)."""
    _check(purpose)
    name = Keys(prefix).deployment_secret(purpose)
    blob = redis.get(name)
    if blob is None:
        redis.set(name, _fernet(fernet_keys).encrypt(os.urandom(KEY_BYTES)), nx=True)
        blob = redis.get(name)
    blob = blob if isinstance(blob, bytes) else blob.encode()
    value = _decrypted.get(blob)
    if value is None:
        try:
            value = _fernet(fernet_keys).decrypt(blob)
        except InvalidToken:
            raise SecretError(f"the deployment secret {purpose!r} cannot be decrypted with TOKEN_ENCRYPTION_KEY "
                              "(was a key removed before rotate-token-keys ran?)") from None
        if len(_decrypted) > 64:
            _decrypted.clear()
        _decrypted[blob] = value
    return value


def forget_cache() -> None:
    """Tests: a fresh Redis behind the same prefix."""
    _cache.clear()
    _decrypted.clear()


LINKS = "links"  # signs unsubscribe links and SMS delivery-report URLs (service/domain/unsubscribe.py)


def link_keys(redis, prefix: str, fernet_keys) -> tuple:
    """The key material for service/domain/unsubscribe.py: the deployment's `links` secret first
    (it signs, and outlives every rotation), then the listed token keys (links made before this
    secret existed were signed under one; they verify while it is listed). Read with `current`:
    one GET, never a key its Redis no longer holds."""
    return (current(redis, prefix, fernet_keys, LINKS), *tuple(fernet_keys))
