"""The access token to use for a store, refreshed ahead of expiry or after a 401.

Salla's refresh tokens are single-use and rotate: sending one twice revokes every token of
the store and the merchant must reinstall. So a refresh happens under a per-store Redis lock,
the stored tokens are re-read inside it (another worker may have refreshed a moment ago),
and both new tokens are stored before the lock is released. With 8 workers hitting a 401 at
once, one refreshes; the other 7 wait on the lock, re-read, and use the new token.

The one window we cannot close: Salla accepts our refresh but the answer never reaches us
(timeout). The old refresh token is then spent and the next attempt gets invalid_grant; the
store is marked needs_reauth, which operators see.

Whose fault is a refused refresh? Only `invalid_grant` (the refresh token is spent, revoked or
from an earlier install) and a missing scope are the store's: it is marked needs_reauth. A
refusal of our own request (`invalid_client`: a wrong SALLA_CLIENT_SECRET; missing client
credentials; a malformed request) is the operator's: an alarm is raised, every store keeps its
state and its work waits (OperatorActionNeeded). Anything else (5xx, 429, an answer we cannot
read, an error we do not know) is retried with backoff.
"""
from __future__ import annotations

import logging
import time

import redis
import requests
from redis.exceptions import LockError

from service.config import metrics
from service.state.alarms import OAUTH_CLIENT, Alarms
from service.config.settings import Settings
from service.state.stores import ACTIVE, NEEDS_REAUTH, StoreRegistry
from service.state.tokens import StoreTokens, TokenStore, token_lock, tokens_from
from service.clients.salla_client import SallaTransientError

log = logging.getLogger(__name__)


class StoreNotAuthorized(Exception):
    """No usable token for this store: never authorized, uninstalled, or needs re-authorization."""


class OperatorActionNeeded(Exception):
    """Only an operator can fix this (see service/state/alarms.py): the work waits, the store's state stays."""


# The store's own refusals (REFERENCE.md §2); the operator's: our client or request is wrong.
STORE_ERRORS = frozenset({"invalid_grant", "invalid_scope"})
OPERATOR_ERRORS = frozenset({"invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_request"})
ALARM_HOLD_SECONDS = 300  # one refresh call per this long while the alarm stands, not one per read


class TokenProvider:

    def __init__(self, settings: Settings, store: redis.Redis, tokens: TokenStore, registry: StoreRegistry,
                 session: requests.Session, clock=time.time):
        self.settings = settings
        self.redis = store
        self.tokens = tokens
        self.registry = registry
        self.session = session
        self.clock = clock
        self.alarms = Alarms(store, settings.redis_key_prefix)

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
            try:
                current = self.refresh(merchant_id, current.access_token)
            except (OperatorActionNeeded, SallaTransientError):
                if current.expires_within(0, self.clock()):
                    raise
                # Refreshing early failed, but the token still works: use it, refresh next time.
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
                metrics.TOKEN_REFRESHES.labels("already_refreshed").inc()
                return current  # another worker refreshed while we waited for the lock
            try:
                fresh = self._call_salla(merchant_id, current)
            except StoreNotAuthorized:
                metrics.TOKEN_REFRESHES.labels("store_refused").inc()
                raise
            except OperatorActionNeeded:
                metrics.TOKEN_REFRESHES.labels("operator_alarm").inc()
                raise
            except SallaTransientError:
                metrics.TOKEN_REFRESHES.labels("failed_will_retry").inc()
                raise
            self.tokens.save(merchant_id, fresh)
            metrics.TOKEN_REFRESHES.labels("refreshed").inc()
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
        held = self.alarms.holding(OAUTH_CLIENT, self.clock())
        if held:
            raise OperatorActionNeeded(held)
        if not (settings.salla_client_id and settings.salla_client_secret):
            self._alarm("cannot refresh Salla tokens: SALLA_CLIENT_ID and SALLA_CLIENT_SECRET are not set")
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
            metrics.count_salla_call("oauth_token", None, "timeout" if isinstance(exc, requests.Timeout)
                                     else "connection_error")
            raise SallaTransientError(f"token refresh failed: {type(exc).__name__}") from None
        metrics.count_salla_call("oauth_token", response.status_code)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict) and "access_token" in answer:
            self.alarms.clear(OAUTH_CLIENT)
            return tokens_from(answer, self.clock())
        error = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), str) else ""
        if error in STORE_ERRORS:
            self._needs_reauth(merchant_id, f"token refresh refused: {response.status_code} {error}")
        if error in OPERATOR_ERRORS:
            self._alarm(f"Salla refused our token refresh with {error} ({response.status_code}): check "
                        "SALLA_CLIENT_ID and SALLA_CLIENT_SECRET against the Partners Portal")
        # 429, 5xx, an answer we cannot read or an error we do not know: try again later.
        raise SallaTransientError(f"token refresh: {response.status_code} {error or 'unexpected answer'}".strip(),
                                  status=response.status_code)

    def _alarm(self, message: str):
        self.alarms.raise_(OAUTH_CLIENT, message, hold_seconds=ALARM_HOLD_SECONDS, now=self.clock())
        log.error("operator alarm: %s (stores keep their state; their reads wait)", message)
        raise OperatorActionNeeded(message)

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
