"""`subscribe-webhooks M`: the store events this service acts on, subscribed through Salla's
Merchant API (`POST /webhooks/subscribe`, scope webhooks.read_write) to PUBLIC_WEBHOOK_URL.

App events (app.store.authorize, app.uninstalled, app.settings.updated) need no subscription.
Idempotent: what `GET /webhooks` already lists for our URL and event is left alone (Salla also
updates a subscription of the same URL and event rather than adding one). Each subscription
carries our security strategy and secret, so that its deliveries verify like the app's.
"""
from __future__ import annotations

from workers.salla_client import SallaClient

# The events service/events.py acts on: they are the moments to read a customer's points.
NEEDED_EVENTS = ("order.created", "order.updated", "order.status.updated", "order.cancelled", "order.refunded",
                 "order.payment.updated", "customer.created", "customer.updated", "customer.login")
NAME_PREFIX = "Loyalty points reminders"


class SubscriptionError(ValueError):
    """The service is not configured to subscribe (no PUBLIC_WEBHOOK_URL)."""


def subscription_body(event: str, url: str, strategy: str, secret: str) -> dict:
    body = {"name": f"{NAME_PREFIX}: {event}", "event": event, "url": url, "version": 2}
    if strategy in ("signature", "token") and secret:
        body["security_strategy"] = strategy
        body["secret"] = secret
    return body


def missing(subscribed: list[dict], url: str, events=NEEDED_EVENTS) -> list[str]:
    have = {row.get("event") for row in subscribed if row.get("url") == url}
    return [event for event in events if event not in have]


def view(subscribed: list[dict], url: str) -> list[dict]:
    """What Salla lists, without the headers (they may carry a secret)."""
    return [{"id": row.get("id"), "event": row.get("event"), "url": row.get("url"), "version": row.get("version"),
             "ours": row.get("url") == url} for row in subscribed]


def subscribe(client: SallaClient, token: str, settings) -> dict:
    url = settings.public_webhook_url
    if not url:
        raise SubscriptionError("PUBLIC_WEBHOOK_URL is not set: where should Salla send the store's events?")
    before = client.webhooks(token)
    added = []
    for event in missing(before, url):
        client.subscribe_webhook(token, subscription_body(event, url, settings.webhook_strategy,
                                                          settings.webhook_secret))
        added.append(event)
    after = client.webhooks(token)
    return {"url": url, "subscribed_now": added, "already_subscribed": [e for e in NEEDED_EVENTS if e not in added
                                                                         and e not in missing(after, url)],
            "missing": missing(after, url), "subscriptions": view(after, url)}
