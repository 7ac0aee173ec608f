"""The access token to use for a store, refreshed ahead of expiry or after a 401.

Salla's refresh tokens are single-use and rotate: sending one twice revokes every token of
the store and the merchant must reinstall. So a refresh happens under a per-store Redis lock,
the stored tokens are re-read inside it (another worker may have refreshed a moment ago),
and both new tokens are stored before the lock is released. With 8 workers hitting a 401 at
once, one refreshes; the other 7 wait on the lock, re-read, and use the new token.

The one window we cannot close: Salla accepts our refresh but the answer never reaches us
(timeout). The old refresh token is then spent and the next attempt gets invalid_grant; the
store is marked needs_reauth, which operators see.
"""
from __future__ import annotations

import logging
import time

import redis
import requests
from redis.exceptions import LockError

from service.settings import Settings
from service.stores import ACTIVE, NEEDS_REAUTH, StoreRegistry
from service.tokens import StoreTokens, TokenStore, token_lock, tokens_from
from workers.salla_client import SallaTransientError

log = logging.getLogger(__name__)


class StoreNotAuthorized(Exception):
    """No usable token for this store: never authorized, uninstalled, or needs re-authorization."""


class TokenProvider:

    def __init__(self, settings: Settings, store: redis.Redis, tokens: TokenStore, registry: StoreRegistry,
                 session: requests.Session, clock=time.time):
        self.settings = settings
        self.redis = store
        self.tokens = tokens
        self.registry = registry
        self.session = session
        self.clock = clock

    def access_token(self, merchant_id: int) -> str:
        if self.settings.salla_access_token:  # single-store mode: the token is configured
            return self.settings.salla_access_token
        current = self.tokens.load(merchant_id)
        if current is None:
            raise StoreNotAuthorized(f"no tokens stored for merchant {merchant_id} (no app.store.authorize yet)")
        can_refresh = bool(self.settings.salla_client_id and self.settings.salla_client_secret and current.refresh_token)
        # Without client credentials, use the token until Salla refuses it rather than mark
        # every store for re-authorization a day before its token expires.
        if can_refresh and current.expires_within(self.settings.token_refresh_ahead_seconds, self.clock()):
            current = self.refresh(merchant_id, current.access_token)
        return current.access_token

    def refresh(self, merchant_id: int, stale_access_token: str) -> StoreTokens:
        """Refresh unless someone already replaced `stale_access_token`; returns the tokens to use."""
        if self.settings.salla_access_token:
            self._needs_reauth(merchant_id, "SALLA_ACCESS_TOKEN was refused (single-store mode cannot refresh)")
        lock = token_lock(self.redis, self.settings.redis_key_prefix, merchant_id)
        if not lock.acquire():
            raise SallaTransientError(f"token refresh of merchant {merchant_id} still under way elsewhere")
        try:
            current = self.tokens.load(merchant_id)
            if current is None:
                raise StoreNotAuthorized(f"tokens of merchant {merchant_id} were removed")
            ahead = self.settings.token_refresh_ahead_seconds
            if current.access_token != stale_access_token and not current.expires_within(ahead, self.clock()):
                return current  # another worker refreshed while we waited for the lock
            fresh = self._call_salla(merchant_id, current)
            self.tokens.save(merchant_id, fresh)
            self.registry.count(merchant_id, "token_refreshes")
            log.info("refreshed Salla tokens of merchant=%s (expire in %.0f h)", merchant_id,
                     (fresh.expires_at - self.clock()) / 3600)
            return fresh
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("refresh lock of merchant=%s expired before release", merchant_id)

    def _call_salla(self, merchant_id: int, current: StoreTokens) -> StoreTokens:
        settings = self.settings
        if not (settings.salla_client_id and settings.salla_client_secret):
            self._needs_reauth(merchant_id, "cannot refresh: SALLA_CLIENT_ID/SALLA_CLIENT_SECRET are not set")
        if not current.refresh_token:
            self._needs_reauth(merchant_id, "no refresh token (the offline_access scope was not granted)")
        try:
            response = self.session.post(
                f"{settings.salla_accounts_url}/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": current.refresh_token,
                      "client_id": settings.salla_client_id, "client_secret": settings.salla_client_secret},
                headers={"Accept": "application/json"},
                timeout=settings.salla_http_timeout_seconds,
            )
        except requests.RequestException as exc:
            raise SallaTransientError(f"token refresh failed: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise SallaTransientError(f"token refresh: {response.status_code} from Salla", status=response.status_code)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else None
            self._needs_reauth(merchant_id, f"token refresh refused: {response.status_code} {error or ''}".strip())
        return tokens_from(answer, self.clock())

    def _needs_reauth(self, merchant_id: int, reason: str):
        self.registry.set_state(merchant_id, NEEDS_REAUTH, reason, now=self.clock())
        log.error("merchant=%s needs re-authorization: %s", merchant_id, reason)
        raise StoreNotAuthorized(reason)

    def mark_needs_reauth(self, merchant_id: int, reason: str) -> None:
        try:
            self._needs_reauth(merchant_id, reason)
        except StoreNotAuthorized:
            pass


def usable(registry: StoreRegistry, merchant_id: int) -> bool:
    """A store we may call Salla for: not uninstalled, not waiting for re-authorization."""
    return registry.state(merchant_id).get("state", ACTIVE) == ACTIVE
