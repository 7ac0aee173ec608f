"""After app.store.authorize: the merchant's app-settings form, read from Salla's App API
(`GET /apps/{SALLA_APP_ID}/settings` with the store's token) and applied with the same checks
as app.settings.updated (service/state/stores.py apply_form). Without SALLA_APP_ID nothing is read:
the store keeps the environment's defaults until the merchant saves the form.
"""
from __future__ import annotations

import logging

from service.clients.oauth import OperatorActionNeeded, StoreNotAuthorized
from service.ops.runtime import Runtime
from service.clients.salla_client import SallaPermanentError, SallaTransientError, SallaUnauthorized

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # transient failures (5xx, 429, timeouts) before the backfill starts without them


def fetch_and_apply(rt: Runtime, merchant_id: int) -> str:
    """applied | skipped (no SALLA_APP_ID) | retry (transient) | refused (4xx, unauthorized)."""
    app_id = rt.settings.salla_app_id
    if not app_id:
        log.info("merchant=%s: SALLA_APP_ID is not set; the store's app settings are not read", merchant_id)
        return "skipped"
    try:
        token = rt.provider.access_token(merchant_id)
        try:
            values = rt.client.app_settings(token, app_id)
        except SallaUnauthorized:
            values = rt.client.app_settings(rt.provider.refresh(merchant_id, token).access_token, app_id)
    except SallaTransientError as exc:
        rt.registry.note_settings_error(merchant_id, f"GET /apps/{app_id}/settings: {exc}")
        log.warning("merchant=%s: app settings not read yet: %s", merchant_id, exc)
        return "retry"
    except (SallaPermanentError, StoreNotAuthorized, OperatorActionNeeded) as exc:
        rt.registry.note_settings_error(merchant_id, f"GET /apps/{app_id}/settings: {exc}")
        rt.registry.count(merchant_id, "app_settings_refused")
        log.error("merchant=%s: Salla refused the app settings read: %s", merchant_id, exc)
        return "refused"
    outcome = rt.registry.apply_form(merchant_id, values, rt.clock(), "app api")
    if outcome.get("rejected"):
        log.warning("merchant=%s app settings: refused %s", merchant_id, ", ".join(sorted(outcome["rejected"])))
    return "applied"
