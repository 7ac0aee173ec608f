"""Delivers a reminder through each channel once, whatever repeats (Redis SET NX per channel).

Per channel, so that a webhook that failed and is retried does not log the reminder twice.
A claim is first written as "sending" with a short TTL, then "sent" with a TTL that outlives
the lots: a worker killed mid-send leaves a claim that expires, and the redelivered task
(acks_late) sends again. That is the one window where a reminder can go out twice; the
webhook carries X-Reminder-Id so that a receiver can close it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from workers.channels import DeliveryPermanentError, DeliveryTransientError

log = logging.getLogger(__name__)

SENDING_CLAIM_SECONDS = 300


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    already_sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def sent_key(prefix: str, reminder_id: str, channel: str) -> str:
    return f"{prefix}reminder:sent:{reminder_id}:{channel}"


def deliver(reminder: dict, channels, store: redis.Redis, prefix: str, keep_seconds: int) -> DeliveryReport:
    """Send through every channel not yet done. A transient failure propagates (the task retries)."""
    report = DeliveryReport()
    for channel in channels:
        key = sent_key(prefix, reminder["reminder_id"], channel.name)
        if not store.set(key, "sending", nx=True, ex=SENDING_CLAIM_SECONDS):
            report.already_sent.append(channel.name)
            continue
        try:
            channel.send(reminder)
        except DeliveryPermanentError as exc:
            # Recorded, not retried in a loop; the next sync of this customer tries again.
            store.delete(key)
            log.error("reminder %s refused by %s: %s (merchant=%s customer=%s)", reminder["reminder_id"],
                      channel.name, exc, reminder["merchant_id"], reminder["customer_id"])
            report.refused.append(channel.name)
            continue
        except (DeliveryTransientError, Exception):
            store.delete(key)
            raise
        store.set(key, "sent", ex=max(keep_seconds, SENDING_CLAIM_SECONDS))
        report.sent.append(channel.name)
    return report
