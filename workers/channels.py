"""Delivery channels. Each has a `name` and `send(reminder)`; failures map to two exceptions.

- log: one structured JSON line (no name, mobile or e-mail: logs are not a place for personal data)
- webhook: POST the reminder as JSON, the raw body signed as lowercase hex HMAC-SHA256 under
  REMINDER_WEBHOOK_SECRET in X-Reminder-Signature (the same scheme Salla uses for us).
"""
from __future__ import annotations

import json
import logging

import requests

from service.settings import Settings
from service.signatures import sign

reminder_log = logging.getLogger("reminders")


class DeliveryTransientError(Exception):
    """Worth retrying: connection trouble, a timeout, 429 or 5xx."""


class DeliveryPermanentError(Exception):
    """The receiver refused the reminder (other 4xx); retrying will not help."""


class LogChannel:
    name = "log"

    def send(self, reminder: dict) -> None:
        line = {key: reminder[key] for key in (
            "reminder_id", "merchant_id", "customer_id", "stage_days", "points_expiring",
            "earliest_expiry", "language")}
        line["lots"] = len(reminder["lots"])
        reminder_log.info("reminder %s", json.dumps(line, ensure_ascii=False, sort_keys=True))


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str, session: requests.Session, timeout: float):
        self.url = url
        self.secret = secret
        self.session = session
        self.timeout = timeout

    def send(self, reminder: dict) -> None:
        body = json.dumps(reminder, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Reminder-Signature": sign(body, self.secret),
            # Stable across retries: a receiver can drop a repeat after a crash mid-send.
            "X-Reminder-Id": reminder["reminder_id"],
        }
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DeliveryTransientError(f"webhook POST failed: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryTransientError(f"webhook receiver answered {response.status_code}")
        if response.status_code >= 400:
            raise DeliveryPermanentError(f"webhook receiver refused the reminder: {response.status_code}")


def build_channels(settings: Settings, session: requests.Session) -> list:
    channels = []
    for name in settings.reminder_channels:
        if name == "log":
            channels.append(LogChannel())
        elif name == "webhook":
            channels.append(WebhookChannel(settings.reminder_webhook_url, settings.reminder_webhook_secret,
                                           session, settings.salla_http_timeout_seconds))
    return channels
