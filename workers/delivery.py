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


def reminded_key(prefix: str, merchant_id: int, customer_id: int) -> str:
    return f"{prefix}reminded:{merchant_id}:{customer_id}"


STAGE_FIELD = "stage:"  # `reminded:{m}:{c}` also holds stage:{S} -> when that stage last went out


def mark_reminded(store: redis.Redis, prefix: str, reminder: dict, keep_seconds: int, now: float) -> None:
    """Record, when a reminder is handed to delivery, which lots it covers and when the stage
    went out. Done before delivery (not after it) so that a read in between cannot queue the
    same stage again for a changed lot set."""
    key = reminded_key(prefix, reminder["merchant_id"], reminder["customer_id"])
    stage = reminder["stage_days"]
    marks = store.hgetall(key)
    updates = {STAGE_FIELD + str(stage): f"{now:.0f}"}
    for lot in reminder["lots"]:
        current = marks.get(lot["key"], marks.get(lot["key"].encode()))
        if current is None or int(current) > stage:
            updates[lot["key"]] = stage
    pipe = store.pipeline()
    pipe.hset(key, mapping=updates)
    pipe.ttl(key)
    ttl = pipe.execute()[-1]
    if ttl < keep_seconds:
        store.expire(key, keep_seconds)


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
            try:
                store.delete(key)
            except redis.RedisError:
                # Redis is gone too: the claim lapses by itself after SENDING_CLAIM_SECONDS.
                log.error("could not release the claim on reminder %s", reminder["reminder_id"])
            raise
        store.set(key, "sent", ex=max(keep_seconds, SENDING_CLAIM_SECONDS))
        report.sent.append(channel.name)
    return report
