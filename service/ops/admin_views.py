"""The admin views' read models (a store's summary, its outcome counts, dead letters, channels and
templates) and the operator's backfill start: the same answers for /admin/* and the CLI."""
from __future__ import annotations

from service.domain.messages import TEMPLATE_NAMES, TEMPLATE_DIR
from service.domain.unsubscribe import dlr_url, shared_dlr_url
from service.state.deployment_secrets import link_keys
from service.ops import backfill
from service.state.channel_settings import ChannelSettings
from service.state.ledger import Ledger, status_counts
from service.state.stores import UNINSTALLED, ConfigError
from service.state.tokens import TokenError


def store_summary(registry, token_store, merchant_id: int, settings=None) -> dict:
    summary = registry.summary(merchant_id)
    if settings is not None:
        summary["backfill"] = backfill.progress(registry.redis, registry.keys, settings,
                                                registry.config(merchant_id), merchant_id)
    try:
        tokens = token_store.load(merchant_id)
        summary["tokens"] = {"stored": tokens is not None,
                             "expires_at": tokens.expires_at if tokens else None,
                             "scope": tokens.scope if tokens else None}
    except TokenError as exc:
        summary["tokens"] = {"stored": True, "error": str(exc)}
    summary["deliveries"] = status_counts(registry.redis, registry.keys, merchant_id)
    return summary


def outcome_stats(store, keys, merchant_id: int) -> dict:
    """Per stage: reminders_sent, points_reminded, points_saved, points_lost, redeemed_before_reminder
    (stage "0" holds per-customer counts such as opted_out_cancelled)."""
    result: dict[str, dict[str, int]] = {}
    for name, value in store.hgetall(keys.store(merchant_id).stats).items():
        name = name.decode() if isinstance(name, bytes) else name
        stage, _, metric = name.partition(":")
        result.setdefault(stage, {})[metric] = int(value)
    return result


def dead_letters(ledger: Ledger, merchants) -> dict:
    return {str(m): [record.view() for record in ledger.dead_letters(m)] for m in merchants}


def channels_view(channel_settings: ChannelSettings, settings, merchant_id: int) -> dict:
    view = channel_settings.view(merchant_id)
    base = settings.public_base_url
    # Signed with the deployment's `links` secret: a URL typed into a provider's console outlives
    # a rotation of TOKEN_ENCRYPTION_KEY.
    keys = link_keys(channel_settings.redis, settings.redis_key_prefix, settings.token_encryption_keys)
    view["callbacks"] = {"sms_delivery_reports": dlr_url(base, keys, merchant_id),
                         # the one report URL of the environment's SMS account, for every store on it
                         "sms_delivery_reports_shared_account": shared_dlr_url(base, keys),
                         "whatsapp_status": f"{base}/channels/whatsapp/status",
                         "whatsapp_status_own_app": f"{base}/channels/whatsapp/{merchant_id}/status"}
    return view


def templates_view(channel_settings: ChannelSettings, merchant_id: int) -> dict:
    overrides = channel_settings.templates(merchant_id)
    return {name: {"overridden": name in overrides,
                   "source": overrides.get(name) or (TEMPLATE_DIR / name).read_text(encoding="utf-8")}
            for name in TEMPLATE_NAMES}


def start_backfill(registry, merchant_id: int, now: float, max_stores: int | None = None) -> dict:
    """Start a backfill (unless one runs or waits for a slot of BACKFILL_MAX_STORES); ConfigError
    when the store cannot be read."""
    state = registry.state(merchant_id).get("state")
    if state == UNINSTALLED:
        raise ConfigError(f"merchant {merchant_id} uninstalled the app: nothing to backfill")
    if state == "needs_reauth":
        raise ConfigError(f"merchant {merchant_id} needs to authorize the app again before a backfill")
    return backfill.start(registry.redis, registry.keys, merchant_id, now, "operator", max_stores)
