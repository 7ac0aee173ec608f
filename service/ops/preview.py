"""For operators: what a store's channels would send to one customer, and a test send.

`preview` renders, per channel, exactly the request or message the channel would send for the
customer's latest reminder in the ledger; without one, for the lots of the customer's last read;
without those, for sample points (the answer says which). Nothing is sent and nothing recorded.
`send_test` sends one sample reminder to an address through one channel, outside the ledger.
Plain Redis and HTTP: the web process (admin API) and the CLI both call these.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from service.domain.arabic import sms_segments
from service.domain.events import Customer
from service.domain.expiry import due_groups
from service.domain.store_policy import policy_for
from service.domain.messages import SAMPLE_REMINDER
from service.domain.reminders import build_reminder
from service.config.settings import CHANNELS, LANGUAGES
from service.state.stores import ConfigError
from service.clients.channels import (ChannelDirectory, DeliveryPermanentError, LogChannel, UnconfiguredChannel,
                              WebhookChannel)
from service.state.ledger import Ledger, full_reminder
from service.state.profiles import Profiles
from service.state.last_read import parse as last_read_of
from service.clients.providers.base import email_address, mobile_digits
from service.clients.providers.email import EmailChannel
from service.clients.providers.sms import SmsChannel
from service.clients.providers.whatsapp import WhatsAppChannel


def _last_read(store, keys, merchant_id: int, customer_id: int):
    pipe = store.pipeline(transaction=False)
    pipe.hgetall(keys.store(merchant_id).profile(customer_id))
    pipe.get(keys.store(merchant_id).lots(customer_id))
    return last_read_of(*pipe.execute())


def latest_reminder(ledger: Ledger, merchant_id: int, customer_id: int, store_name: str = "") -> dict | None:
    pattern = ledger.keys.store(merchant_id).reminder("*")
    best = None
    for key in ledger.redis.scan_iter(match=pattern, count=500):
        key = key.decode() if isinstance(key, bytes) else key
        record = ledger.get(merchant_id, key.rsplit(":", 1)[-1])
        if record is not None and record.customer_id == customer_id and (best is None or record.created_at > best.created_at):
            best = record
    if best is None:
        return None
    if best.body:
        return best.reminder
    # sent: its body is rendered again (service/state/ledger.py) from the last read (service/state/last_read.py)
    last_read = _last_read(ledger.redis, ledger.keys, merchant_id, customer_id)
    return full_reminder(best, Profiles(ledger.redis, ledger.keys.prefix).load(merchant_id, customer_id),
                         last_read[1] if last_read else [], store_name)


def _from_last_read(store, keys, settings, directory: ChannelDirectory, merchant_id: int, customer: Customer,
                    language: str, now: datetime) -> dict | None:
    last_read = _last_read(store, keys, merchant_id, customer.id)
    if last_read is None:
        return None
    lots = last_read[1]
    policy = policy_for(settings, directory.registry.config(merchant_id))
    groups = due_groups(lots, now, policy.stages_days, policy.min_points)
    if not groups:
        return None
    # Every stage it is in now, as one message (as the engine sends stages due at once).
    return build_reminder(merchant_id, customer, groups[0], language, now, policy.point_value_sar, policy.store_name,
                          others=groups[1:])


def sample_reminder(merchant_id: int, customer: Customer, language: str, now: datetime) -> dict:
    expiry = (now + timedelta(days=7)).astimezone(timezone(timedelta(hours=3))).replace(hour=23, minute=59, second=0,
                                                                                       microsecond=0)
    return {**SAMPLE_REMINDER, "reminder_id": uuid.uuid4().hex, "merchant_id": merchant_id, "customer_id": customer.id,
            "customer": {"name": customer.name, "mobile": customer.mobile, "email": customer.email},
            "language": language, "value_sar": None, "points_expiring": 150,
            "earliest_expiry": expiry.isoformat(), "lots": [{"key": "sample", "expires_at": expiry.isoformat()}],
            "generated_at": now.isoformat()}


def render_for(channel, reminder: dict) -> dict:
    """What `channel.send(reminder)` would send, as data."""
    if isinstance(channel, UnconfiguredChannel):
        return {"error": f"not configured: missing {', '.join(channel.missing)}"}
    try:
        if isinstance(channel, WhatsAppChannel):
            return {"url": channel.url, "request": channel.request_body(reminder, mobile_digits(reminder))}
        if isinstance(channel, SmsChannel):
            text = channel.text(reminder)
            segments = sms_segments(text)
            return {"provider": channel.client.name, "url": channel.client.url, "to": mobile_digits(reminder),
                    "sender": channel.client.sender, "text": text,
                    "segments": {"encoding": segments.encoding, "units": segments.units, "parts": segments.parts,
                                 "max": channel.max_segments}}
        if isinstance(channel, EmailChannel):
            message = channel.message(reminder)
            return {"headers": {k: str(v) for k, v in message.items() if k not in ("Date", "Message-ID")},
                    "text": message.get_body(("plain",)).get_content(),
                    "html": message.get_body(("html",)).get_content()}
        if isinstance(channel, WebhookChannel):
            return {"url": channel.url, "body": reminder}
        if isinstance(channel, LogChannel):
            return {"line": "reminder " + json.dumps({k: reminder[k] for k in (
                "reminder_id", "merchant_id", "customer_id", "stage_days", "points_expiring", "earliest_expiry",
                "language")} | {"lots": len(reminder["lots"])}, ensure_ascii=False, sort_keys=True)}
    except Exception as exc:  # no address for it, say
        return {"error": str(exc), "reason": getattr(exc, "reason", "")}
    return {}


def check_choices(channel, language) -> None:
    """An operator's channel and language (admin API, CLI: untrusted input): one of ours or
    absent, else ConfigError (a 400), never a crash further in."""
    if channel is not None and (not isinstance(channel, str) or channel not in CHANNELS):
        raise ConfigError(f"channel must be one of {', '.join(CHANNELS)}")
    if language is not None and (not isinstance(language, str) or language not in LANGUAGES):
        raise ConfigError(f"lang must be one of {', '.join(LANGUAGES)}")


def preview(store, settings, directory: ChannelDirectory, merchant_id: int, customer_id: int,
            channel: str | None = None, language: str | None = None, now: datetime | None = None) -> dict:
    check_choices(channel, language)
    now = now or datetime.now(timezone.utc)
    ledger = Ledger(store, settings.redis_key_prefix)
    customer = Profiles(store, settings.redis_key_prefix,
                        settings.data_retention_days * 86400).load(merchant_id, customer_id)
    config = directory.registry.config(merchant_id)
    chosen = language or customer.lang or config.get("language") or settings.reminder_language
    reminder, source = latest_reminder(ledger, merchant_id, customer_id, config.get("store_name", "")), "ledger"
    if reminder is None:
        reminder, source = _from_last_read(store, ledger.keys, settings, directory, merchant_id, customer, chosen,
                                           now), "last read"
    if reminder is None:
        reminder, source = sample_reminder(merchant_id, customer, chosen, now), "sample (no reminder or read known)"
    if language:
        reminder = {**reminder, "language": language}
    channels, policy = directory.build(merchant_id, [channel] if channel else None)
    return {"merchant_id": merchant_id, "customer_id": customer_id, "source": source,
            "reminder_id": reminder["reminder_id"], "language": reminder["language"], "policy": policy,
            "channels": {c.name: render_for(c, reminder) for c in channels}}


def send_test(directory: ChannelDirectory, merchant_id: int, to: str, channel: str | None = None,
              language: str | None = None, name: str = "") -> dict:
    """Send one sample reminder to `to` (an e-mail address or a mobile number in E.164)."""
    check_choices(channel, language)
    is_email = "@" in to
    stored, policy = directory.build(merchant_id)
    if channel is None:
        wanted = ("email",) if is_email else ("whatsapp", "sms")
        channel = next((c.name for c in stored if c.name in wanted), wanted[0])
    if channel not in ("whatsapp", "sms", "email", "webhook", "log"):
        raise ConfigError(f"unknown channel {channel!r}")
    config = directory.registry.config(merchant_id)
    lang = language or config.get("language") or directory.settings.reminder_language
    customer = Customer(0, name or ("تجربة" if lang == "ar" else "Test"), None if is_email else "+" + to.lstrip("+"),
                        to if is_email else None, True)
    reminder = sample_reminder(merchant_id, customer, lang, datetime.now(timezone.utc))
    [built], _ = directory.build(merchant_id, [channel])
    # The operator's doing, not the provider's: a ConfigError (a 400), where a provider's refusal
    # is a DeliveryPermanentError (a 502).
    if isinstance(built, UnconfiguredChannel):
        raise ConfigError(f"{channel} is not configured for store {merchant_id} (missing {', '.join(built.missing)})")
    try:
        if channel == "email":
            email_address(reminder)
        elif channel in ("whatsapp", "sms"):
            mobile_digits(reminder)
    except DeliveryPermanentError as exc:
        raise ConfigError(f"to: {exc}") from None
    message_id = built.send(reminder)
    return {"merchant_id": merchant_id, "channel": channel, "sent": True, "message_id": message_id or None,
            "reminder_id": reminder["reminder_id"]}
