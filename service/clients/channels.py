"""Delivery channels, built per store. Each has a `name` and `send(reminder)`, which returns the
provider's message id (or None) or raises one of two exceptions (service/clients/providers/base.py).

- log: one structured JSON line (no name, mobile or e-mail: logs are not a place for personal data)
- webhook: POST the reminder as JSON to the store's URL (the global REMINDER_WEBHOOK_URL is the
  default), the raw body signed as lowercase hex HMAC-SHA256 under the store's secret in
  X-Reminder-Signature; `timestamp` inside the signed body, and `Idempotency-Key` (= X-Reminder-Id).
  A redirect is never followed: it fails the channel.
- whatsapp, sms, email: service/clients/providers/

`ChannelDirectory.for_store(m)` gives a store's channels in its order and its policy (service/
channel_settings.py), built from its settings, templates and name, and kept for a few seconds
only, so that a changed setting applies within CACHE_SECONDS. A channel whose address the store
set itself connects to public addresses only (service/clients/providers/public_only.py), unless
ALLOW_PRIVATE_URLS=1; the environment's defaults are the operator's and are not restricted.
"""
from __future__ import annotations

import json
import logging
import time

import requests

from service.state.alarms import Alarms
from service.state.channel_settings import ADDRESS_FIELDS, NEEDS, ChannelSettings, defaults, merge
from service.domain.messages import Renderer
from service.config.settings import Settings
from service.domain.signatures import sign
from service.state.stores import StoreRegistry
from service.domain.unsubscribe import unsubscribe_url
from service.state.deployment_secrets import link_keys
from service.clients.providers.base import (NOT_CONFIGURED, REFUSED, DeliveryPermanentError,  # noqa: F401 (re-exported)
                                    DeliveryTransientError)
from service.clients.providers.email import EmailChannel
from service.clients.providers.public_only import public_session
from service.clients.providers.sms import SmsChannel
from service.clients.providers.whatsapp import WhatsAppChannel

reminder_log = logging.getLogger("reminders")
log = logging.getLogger(__name__)
CACHE_SECONDS = 5.0


def template_alarm(merchant_id: int) -> str:
    return f"template_{merchant_id}"


class LogChannel:
    name = "log"

    def send(self, reminder: dict) -> None:
        line = {key: reminder[key] for key in (
            "reminder_id", "merchant_id", "customer_id", "stage_days", "points_expiring",
            "earliest_expiry", "language")}
        line["lots"] = len(reminder["lots"])
        line["other_stages"] = [other["stage_days"] for other in reminder.get("other_stages") or []]
        # The fields as JSON under `data` in the log line (service/config/logs.py); devkit/logfiles.py reads them back.
        reminder_log.info("reminder %s", reminder["reminder_id"], extra={"lpr_data": line})


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str, session: requests.Session, timeout: float, clock=time.time):
        self.url = url
        self.secret = secret
        self.session = session
        self.timeout = timeout
        self.clock = clock

    def send(self, reminder: dict) -> None:
        # The timestamp is signed with the body: a receiver can refuse a replay of an old delivery.
        signed = {**reminder, "timestamp": int(self.clock())}
        body = json.dumps(signed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Reminder-Signature": sign(body, self.secret),
            # Stable across retries: a receiver can drop a repeat after a crash mid-send.
            "X-Reminder-Id": reminder["reminder_id"],
            "Idempotency-Key": reminder["reminder_id"],
        }
        try:
            # Never redirected: a 307/308 would re-send the signed body and the shopper's contact
            # details to wherever the receiver points (another host, a private address).
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.RequestException as exc:
            raise DeliveryTransientError(f"webhook POST failed: {type(exc).__name__}") from None
        if 300 <= response.status_code < 400:
            raise DeliveryPermanentError(f"webhook receiver answered {response.status_code} (a redirect; signed "
                                         "reminders are never redirected: set the final URL)", REFUSED)
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryTransientError(f"webhook receiver answered {response.status_code}")
        if response.status_code >= 400:
            raise DeliveryPermanentError(f"webhook receiver refused the reminder: {response.status_code}", REFUSED)


class UnconfiguredChannel:
    """A channel the store lists without what it needs (say, no SMS key and no SMS_API_KEY)."""

    def __init__(self, name: str, missing: list[str]):
        self.name = name
        self.missing = missing

    def send(self, reminder: dict) -> None:
        raise DeliveryPermanentError(f"{self.name} is not configured (missing {', '.join(self.missing)})", NOT_CONFIGURED)


class ChannelDirectory:
    def __init__(self, settings: Settings, store, session: requests.Session, registry: StoreRegistry,
                 clock=time.monotonic):
        self.settings = settings
        self.session = session
        self.public_session = public_session()  # for the addresses a store set itself
        self.registry = registry
        self.store = store
        self.channel_settings = ChannelSettings(store, settings.redis_key_prefix, settings)
        self.alarms = Alarms(store, settings.redis_key_prefix)
        self.clock = clock
        self._cache: dict[int, tuple[float, list, str]] = {}

    def for_store(self, merchant_id: int) -> tuple[list, str]:
        now = self.clock()
        cached = self._cache.get(merchant_id)
        if cached is None or cached[0] <= now:
            channels, policy = self.build(merchant_id)
            cached = (now + CACHE_SECONDS, channels, policy)
            self._cache[merchant_id] = cached
        return cached[1], cached[2]

    def build(self, merchant_id: int, only: list[str] | None = None) -> tuple[list, str]:
        stored = self.channel_settings.stored(merchant_id)
        effective = merge(stored, defaults(self.settings))
        config = self.registry.config(merchant_id)
        store_name = config.get("store_name", "")
        renderer = Renderer(self.channel_settings.templates(merchant_id),
                            on_problem=lambda name, problem: self.template_failed(merchant_id, name, problem))
        s = self.settings

        def unsubscribe(reminder: dict) -> str:
            # Signed with the deployment's `links` secret (read at each link: one GET), so the link
            # in a sent e-mail outlives a rotation of TOKEN_ENCRYPTION_KEY.
            keys = link_keys(self.store, s.redis_key_prefix, s.token_encryption_keys)
            return unsubscribe_url(s.public_base_url, keys, reminder["merchant_id"], reminder["customer_id"])

        channels = []
        for name in only or effective.channels:
            missing = [f"{name}.{field}" for field in NEEDS.get(name, ()) if not effective.of(name).get(field)]
            if missing:
                channels.append(UnconfiguredChannel(name, missing))
                continue
            cfg = effective.of(name)
            timeout = s.salla_http_timeout_seconds
            public_only = not s.allow_private_urls and ADDRESS_FIELDS.get(name) in stored.get(name, {})
            session = self.public_session if public_only else self.session
            if name == "log":
                channels.append(LogChannel())
            elif name == "webhook":
                channels.append(WebhookChannel(cfg["url"], cfg["secret"], session, timeout))
            elif name == "whatsapp":
                channels.append(WhatsAppChannel(merchant_id, cfg, session, timeout, store_name))
            elif name == "sms":
                channels.append(SmsChannel(merchant_id, cfg, session, timeout, renderer, store_name))
            elif name == "email":
                channels.append(EmailChannel(merchant_id, cfg, timeout, renderer, store_name, unsubscribe,
                                             public_only=public_only))
        return channels, effective.policy

    def template_failed(self, merchant_id: int, name: str, problem: str) -> None:
        """A store's override failed in the sandbox: the shopper got the shipped template, and
        only an operator (or the merchant) can fix the override, so it is an alarm."""
        log.warning("merchant %s: template %s failed, the shipped one was used: %s", merchant_id, name, problem)
        try:
            self.alarms.raise_(template_alarm(merchant_id), f"merchant {merchant_id}: template override {name} "
                               f"fails ({problem}); the shipped template is sent instead until it is fixed")
        except Exception:  # Redis down: the send goes on, the log line above still tells
            log.exception("could not raise alarm %s", template_alarm(merchant_id))
