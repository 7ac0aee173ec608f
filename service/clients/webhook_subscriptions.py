"""`subscribe-webhooks M`: the store events this service acts on, subscribed through Salla's
Merchant API (scope webhooks.read_write) to PUBLIC_WEBHOOK_URL, signed as our settings say.

App events (app.store.authorize, app.uninstalled, app.settings.updated) need no subscription.
Three steps, each as Salla documents it (tests/fixtures/salla/SOURCES.md):
1. `POST /webhooks/subscribe` for each event `GET /webhooks` does not list for our URL, with the
   Register Webhook fields only (name, event, url, version). Register has no security fields:
   Salla signs such a webhook with Signature and a secret of its own, so that every delivery
   would be refused here.
2. `PUT /webhooks/{id}` (Update Webhook) sets our strategy and secret on each subscription of
   ours, old ones too (one registered by an earlier version, or before the secret was rotated).
3. `GET /webhooks` again: every event must be listed for our URL as intended, else a
   SubscriptionError says what is wrong. What the list shows is checked (version, and where it
   shows them the strategy and the Token secret); a Signature secret is never shown.
Idempotent: run it again and it registers nothing twice (Salla also updates a subscription of
the same URL and event rather than adding one). The secret never appears in what it returns.
"""
from __future__ import annotations

import hmac

from service.clients.salla_client import SallaClient

# The events service/domain/events.py acts on: they are the moments to read a customer's points.
NEEDED_EVENTS = ("order.created", "order.updated", "order.status.updated", "order.cancelled", "order.refunded",
                 "order.payment.updated", "customer.created", "customer.updated", "customer.login")
NAME_PREFIX = "Loyalty points reminders"
SECURED = ("signature", "token")  # the strategies Update Webhook sets; `none` leaves Salla's default


class SubscriptionError(ValueError):
    """Not configured to subscribe (no PUBLIC_WEBHOOK_URL), or Salla's list is not as intended."""


def subscription_body(event: str, url: str) -> dict:
    """Register Webhook's documented fields, nothing else."""
    return {"name": f"{NAME_PREFIX}: {event}", "event": event, "url": url, "version": 2}


def security_body(strategy: str, secret: str) -> dict | None:
    """Update Webhook's body that makes Salla sign as we verify; None when nothing is to set."""
    if strategy in SECURED and secret:
        return {"security_strategy": strategy, "secret": secret}
    return None


def ours(subscribed: list[dict], url: str) -> list[dict]:
    return [row for row in subscribed if row.get("url") == url and row.get("event") in NEEDED_EVENTS]


def missing(subscribed: list[dict], url: str, events=NEEDED_EVENTS) -> list[str]:
    have = {row.get("event") for row in subscribed if row.get("url") == url}
    return [event for event in events if event not in have]


def mismatches(subscribed: list[dict], url: str, strategy: str, secret: str) -> list[str]:
    """What GET /webhooks shows of our subscriptions that is not as intended (never a secret)."""
    found = []
    for row in ours(subscribed, url):
        event = row.get("event")
        if row.get("version", 2) != 2:
            found.append(f"{event}: version {row.get('version')!r}, not 2")
        if strategy not in SECURED:
            continue
        shown = row.get("security_strategy")
        if isinstance(shown, str) and shown.lower() != strategy:
            found.append(f"{event}: security strategy {shown!r}, not {strategy!r}")
        headers = row.get("headers") if isinstance(row.get("headers"), dict) else {}
        authorization = headers.get("Authorization")
        if strategy == "token" and not (isinstance(authorization, str) and hmac.compare_digest(
                authorization.encode(), secret.encode())):
            found.append(f"{event}: its Authorization header is not our SALLA_WEBHOOK_SECRET")
    return found


def view(subscribed: list[dict], url: str) -> list[dict]:
    """What Salla lists, without the headers (they may carry a secret)."""
    return [{"id": row.get("id"), "event": row.get("event"), "url": row.get("url"), "version": row.get("version"),
             "ours": row.get("url") == url} for row in subscribed]


def subscribe(client: SallaClient, token: str, settings) -> dict:
    url = settings.public_webhook_url
    if not url:
        raise SubscriptionError("PUBLIC_WEBHOOK_URL is not set: where should Salla send the store's events?")
    strategy, secret = settings.webhook_strategy, settings.webhook_secret
    listed = client.webhooks(token)
    added = []
    for event in missing(listed, url):
        client.subscribe_webhook(token, subscription_body(event, url))
        added.append(event)
    if added:
        listed = client.webhooks(token)  # the new ones' ids
    secured, unsecured = [], []
    security = security_body(strategy, secret)
    if security is not None:
        for row in ours(listed, url):
            if not isinstance(row.get("id"), int) or isinstance(row.get("id"), bool):
                unsecured.append(f"{row.get('event')}: Salla lists it without an id to update")
                continue
            client.update_webhook(token, row["id"], security)
            secured.append(row.get("event"))
    after = client.webhooks(token)
    result = {"url": url, "subscribed_now": added,
              "already_subscribed": [e for e in NEEDED_EVENTS if e not in added and e not in missing(after, url)],
              "security_set": sorted(secured), "security_strategy": strategy if security else "salla's default",
              "missing": missing(after, url), "subscriptions": view(after, url)}
    problems = [f"{event}: not listed for {url}" for event in result["missing"]] + unsecured + \
        mismatches(after, url, strategy, secret)
    if problems:
        raise SubscriptionError("Salla's webhook list is not as intended after subscribing: " + "; ".join(problems))
    return result
