"""From a reminder to the shopper: queued under watch, delivered once per channel, recorded.

queue_reminder  arm a timer in the due set, record the reminder in the ledger (claiming its
                lots at its stage), publish the delivery task. The timer comes first: whatever
                fails after it (the ledger write, the publish, the worker), the sweep finds the
                timer when it runs out and publishes the delivery again. Nothing waits for a
                broker's redelivery, and nothing is lost with a message.
deliver         one attempt: re-check (uninstalled, opted out, paused), then the store's channels
                in its order (rt.channels_for). Policy `all`: every channel not yet done;
                `first`: the next channel only after one failed for good (refused, no address
                for it, out of retries), never while one waits for a retry. The first channel
                that sends makes the reminder `sent` (its lots are marked and it is counted,
                once). Transient failures come back through the timer with backoff; out of
                attempts, or refused by every channel, it is a dead letter. A channel that sent
                and reported a failure later is reopened from the next channel by
                service/ops/fallback.py and delivered here like any attempt.
"""
from __future__ import annotations

import logging

from service.config import metrics
from service.config.settings import delivery_lease_seconds
from service.state.message_index import MessageIndex, Sent, send_handles
from service.domain.store_policy import policy_for
from workers.backoff import retry_countdown
from service.clients.channels import DeliveryPermanentError, DeliveryTransientError
from service.clients.providers.base import RETRIES_USED_UP
from service.state.due_set import DueEntry
from service.ops.fallback import failure_of, handle_late_failure, reopen_at
from service.state.ledger import CANCELLED, DEAD, LIVE, count_stat, full_reminder

log = logging.getLogger(__name__)

# A delivery queued or running and not finished this long after it started is taken for lost
# and published again (its worker died, its message was lost). Longer than an attempt can take:
# derived from the channels' timeout (service/config/settings.py, issue 15); this one at the
# default timeout, lease_seconds(rt) the runtime's own.
DELIVERY_LEASE_SECONDS = delivery_lease_seconds(10.0)


def lease_seconds(rt) -> float:
    """The runtime's delivery lease: every channel of an attempt at its worst, and more."""
    return delivery_lease_seconds(rt.settings.salla_http_timeout_seconds)
MAX_ATTEMPTS = 12  # with backoff doubling from 2 s up to 15 min: about 45 minutes in all
PAUSED_RETRY_SECONDS = 3600
FIRST, ALL = "first", "all"  # a store's channel policy (service/state/channel_settings.py)
REPORTING_CHANNELS = ("whatsapp", "sms")  # their providers report statuses later (service/web/callbacks.py)


def _timer(reminder: dict) -> DueEntry:
    """The due-set entry that watches a reminder on its way (keyed by the reminder's id)."""
    return DueEntry.for_reminder(reminder["merchant_id"], reminder["customer_id"], reminder["stage_days"],
                                 reminder["reminder_id"])


def _record_timer(record) -> DueEntry:
    return DueEntry.for_reminder(record.merchant_id, record.customer_id, record.stage, record.reminder_id)


def arm(rt, entry: DueEntry, when: float) -> None:
    rt.due.schedule([(when, entry)])


def queue_reminder(rt, reminder: dict, keep_seconds: int, now: float, publish) -> str:
    """Hand a reminder to delivery; returns the ledger's answer ('created' or an existing state)."""
    timer = _timer(reminder)
    arm(rt, timer, now + lease_seconds(rt))
    state = rt.ledger.create(reminder, keep_seconds, now)
    if state != "created" and state not in LIVE:
        rt.due.remove([timer])  # the same reminder was already sent (or dropped, or is a dead letter)
        return state
    if state == "created":
        rt.registry.count(reminder["merchant_id"], "reminders_queued")
        metrics.REMINDERS.labels("scheduled", "any").inc()
    try:
        publish(reminder["merchant_id"], reminder["customer_id"], reminder["reminder_id"])
    except Exception as exc:  # the broker is down: the timer publishes it when it runs out
        log.warning("reminder %s not published (%s); the sweep publishes it within %ds", reminder["reminder_id"],
                    type(exc).__name__, lease_seconds(rt))
    return state


def deliver(rt, merchant_id: int, customer_id: int, reminder_id: str, now: float) -> str:
    """One delivery attempt; returns the reminder's state afterwards."""
    record = rt.ledger.get(merchant_id, reminder_id)
    if record is None:
        log.warning("reminder %s of merchant=%s is not in the ledger (erased?); nothing to deliver", reminder_id,
                    merchant_id)
        return "missing"
    timer = _record_timer(record)
    if record.state not in LIVE:
        rt.due.remove([timer])
        return record.state
    m, c = merchant_id, customer_id
    # Queued or retried deliveries check again: an uninstall, an opt-out or a pause since wins.
    uninstalled, config = rt.registry.uninstalled_and_config(m)  # one round trip for both
    if uninstalled:
        return _stop(rt, record, timer, CANCELLED, now, "the store uninstalled the app", "deliveries_cancelled")
    if rt.profiles.load(m, c).notifications_enabled is False:
        count_stat(rt.store, rt.keys, m, 0, "opted_out_cancelled")
        return _stop(rt, record, timer, CANCELLED, now, "the customer opted out", "deliveries_cancelled")
    if config.get("paused"):
        arm(rt, timer, now + PAUSED_RETRY_SECONDS)  # kept, not lost: it goes out once the store resumes
        rt.registry.count(m, "deliveries_held_paused")
        return record.state

    try:
        channels, policy = rt.channels_for(m)
    except Exception as exc:  # settings that cannot be read (a removed key): retry, never lose it
        log.exception("reminder %s: the channels of merchant=%s cannot be built", reminder_id, m)
        channels, policy, broken = [], "all", f"channel settings: {type(exc).__name__}"
    else:
        broken = ""
    attempt = rt.ledger.begin_attempt(m, reminder_id, now)
    if attempt is None:  # forgotten or uninstalled since the record was read: nothing is re-created
        return _gone(rt, record, timer)
    arm(rt, timer, now + lease_seconds(rt))  # if this worker dies now, the sweep takes over
    reminder = _full_reminder(rt, record)
    # A channel that sent and failed later is `failed:` again (service/ops/fallback.py): the reminder
    # counts as reaching nobody, so that `first` goes on to the next channel.
    sent = any(outcome == "sent" for outcome in record.channels.values())
    marked = False  # this attempt marked it sent (the mark after the loop is for an earlier attempt's send)
    transient, refused, busy_until, wait = ([broken] if broken else []), [], 0.0, 0.0
    for channel in channels:
        if policy == FIRST and (sent or transient or busy_until):
            break  # `first`: one channel reaches the shopper; the next only after a failure for good
        claim = rt.ledger.claim_channel(m, reminder_id, channel.name, attempt, now)
        if claim == "sent":
            sent = True
            continue
        if claim == "failed":  # refused for good by an earlier attempt
            continue
        if claim.startswith("busy:"):  # another attempt may be sending right now
            busy_until = max(busy_until, float(claim[5:]))
            continue
        if claim == "gone":  # the record was erased (forget, uninstall) during this attempt
            return _gone(rt, record, timer)
        if rt.profiles.load(m, c).notifications_enabled is False:  # an opt-out during this attempt
            count_stat(rt.store, rt.keys, m, 0, "opted_out_cancelled")
            return _stop(rt, record, timer, CANCELLED, now, "the customer opted out", "deliveries_cancelled")
        try:
            message_id = channel.send(reminder)
        except DeliveryPermanentError as exc:
            _failed(rt, m, reminder_id, channel.name, getattr(exc, "reason", "refused"), str(exc), exc)
            refused.append(f"{channel.name}: {exc}")
            continue
        except Exception as exc:  # DeliveryTransientError, or a bug: never lose the reminder to it
            if not isinstance(exc, DeliveryTransientError):
                log.exception("reminder %s: %s failed unexpectedly", reminder_id, channel.name)
            _raise_alarm(rt, getattr(exc, "alarm", None))
            if attempt >= MAX_ATTEMPTS:  # out of attempts: this channel gives up (`first` tries the next)
                _failed(rt, m, reminder_id, channel.name, RETRIES_USED_UP, f"{type(exc).__name__}: {exc}")
                refused.append(f"{channel.name}: retries used up ({exc})")
                continue
            rt.ledger.channel_result(m, reminder_id, channel.name, f"retry:{type(exc).__name__}: {exc}")
            metrics.REMINDERS.labels("retrying", channel.name).inc()
            transient.append(f"{channel.name}: {exc}")
            wait = max(wait, getattr(exc, "retry_after", None) or 0.0)
            continue
        # The send and the provider's message id in one step: a status callback that finds the id
        # finds the send (service/state/message_index.py keeps the statuses that come before it).
        lifetime = rt.ledger.record_send(m, reminder_id, channel.name, message_id or "", now)
        metrics.REMINDERS.labels("sent", channel.name).inc()
        if lifetime is None:  # erased while this channel sent: nothing recorded, nothing re-armed
            log.warning("reminder %s of merchant=%s was erased while %s sent it", reminder_id, m, channel.name)
            return _gone(rt, record, timer)
        log.info("reminder %s of merchant=%s customer=%s sent by %s (attempt %d)", reminder_id, m, c, channel.name,
                 attempt)
        rt.ledger.mark_sent(m, c, reminder_id, now)
        marked = True
        if lifetime is not None and channel.name in REPORTING_CHANNELS:
            _index_send(rt, m, reminder_id, channel, message_id or "", lifetime, [ch.name for ch in channels], policy,
                        now)
        sent = True
    if sent and not marked:
        rt.ledger.mark_sent(m, c, reminder_id, now)  # an earlier attempt sent it (a round trip saved otherwise)

    if transient or busy_until:
        if attempt < MAX_ATTEMPTS:
            delay = max(retry_countdown(attempt - 1, wait or None), 1.0) if transient else busy_until - now + 1
            if not rt.ledger.retrying(m, reminder_id, "; ".join(transient) or "a channel is busy", now):
                return _gone(rt, record, timer)
            arm(rt, timer, now + delay)
            log.warning("reminder %s: attempt %d/%d failed (%s); again in %.0fs", reminder_id, attempt, MAX_ATTEMPTS,
                        "; ".join(transient) or "busy", delay)
            return "retrying"
        if not sent:
            return _stop(rt, record, timer, DEAD, now, "retries used up: " + "; ".join(transient + refused),
                         "reminders_dead")
    elif not sent:
        why = "; ".join(refused) or "the store lists no channel"
        return _stop(rt, record, timer, DEAD, now, ("refused: " if refused else "") + why, "reminders_dead")
    if not rt.ledger.settle_sent(m, c, reminder_id, now):
        # The channel that sent reported a failure while this attempt ran: its timer (set by
        # service/ops/fallback.py) brings the next attempt, which goes on to the next channel.
        return "reopened"
    rt.due.remove([timer])
    # Only a provider that reports later (service/web/callbacks.py) can reopen it between the two
    # lines above: without one, the check's round trip is saved (bench/workers.py).
    may_report = any(name in REPORTING_CHANNELS for name in [*record.channels, *(ch.name for ch in channels)])
    if may_report and rt.ledger.state(m, reminder_id) in LIVE:
        arm(rt, timer, reopen_at(now, reminder, *_send_window(rt, m)))
        return "reopened"
    return "sent"


def _full_reminder(rt, record) -> dict:
    """The whole reminder: its body, or (a sent one reopened or replayed: the body went once it
    was sent) rendered again from the profile and the last read's lots (service/state/ledger.py)."""
    if record.body:
        return record.reminder
    from workers.reminding import load_lots  # reminding imports this module
    m, c = record.merchant_id, record.customer_id
    lots = load_lots(rt, m, c)
    return full_reminder(record, rt.profiles.load(m, c), lots[1] if lots else [],
                         policy_for(rt.settings, rt.registry.config(m)).store_name)


def _send_window(rt, m: int) -> tuple:
    """The store's own time zone and quiet hours (its settings, else the environment's)."""
    policy = policy_for(rt.settings, rt.registry.config(m))
    return policy.timezone, policy.quiet_hours


def _index_send(rt, m: int, reminder_id: str, channel, message_id: str, lifetime_ms: int, order: list[str],
                policy: str, now: float) -> None:
    """The send in the cross-store index (after the ledger: see service/state/message_index.py), then
    every status that arrived before it, applied now: an early failure moves on as a late one does."""
    index = MessageIndex(rt.store, rt.settings.redis_key_prefix)
    provider = getattr(channel, "provider", channel.name)
    handles = send_handles(provider, message_id, reminder_id)
    if not handles:
        return
    index.remember(provider, handles, Sent(m, reminder_id, channel.name), lifetime_ms)
    for early in index.take_early(provider, handles):
        if early.get("merchant") not in (None, m) or early.get("channel") != channel.name:
            continue  # another store's report URL or app named this message: not theirs to report
        failure = failure_of(early)
        outcome = rt.ledger.record_status(m, reminder_id, channel.name, str(early.get("status", "")),
                                          reason=failure.reason if failure else "", at=str(early.get("at", "")))
        log.info("reminder %s of merchant=%s: %s status %r arrived before its send was recorded: %s", reminder_id,
                 m, channel.name, early.get("status"), outcome)
        if failure is not None and outcome not in ("missing", "unknown", "kept"):
            # This attempt finds the channel failed when it settles and leaves the reminder on its
            # way; the timer set here brings the next channel (the sweep publishes it).
            handle_late_failure(rt.ledger, rt.due, m, reminder_id, channel.name, failure, order, policy, now,
                                *_send_window(rt, m), lambda *args: None)


def _failed(rt, m: int, reminder_id: str, channel: str, reason: str, why: str, exc=None) -> None:
    """A channel failed for good: recorded in the ledger, counted by reason, its alarm raised.
    The message names ids, the channel and the provider's code, never the shopper's address."""
    rt.ledger.channel_result(m, reminder_id, channel, f"failed:{reason}: {why}")
    metrics.REMINDERS.labels("failed", channel).inc()
    rt.ledger.record_status(m, reminder_id, channel, "failed", reason=reason, at=f"{rt.clock():.0f}")
    _raise_alarm(rt, getattr(exc, "alarm", None))
    log.warning("reminder %s of merchant=%s: %s failed for good (%s): %s", reminder_id, m, channel, reason, why)


def _raise_alarm(rt, alarm) -> None:
    if alarm:
        try:
            rt.alarms.raise_(alarm[0], alarm[1])
        except Exception:
            log.exception("could not raise alarm %s", alarm[0])


def _gone(rt, record, timer: DueEntry) -> str:
    """The record vanished during the attempt (the customer forgotten, the store uninstalled):
    nothing more is sent or written for it, and its timer goes (the sweep would otherwise ask
    Salla for a fresh read of an erased customer). Counted as cancelled, in the metrics only: the
    store's own counters may be erased too."""
    rt.due.remove([timer])
    metrics.REMINDERS.labels("cancelled", "any").inc()
    log.warning("reminder %s of merchant=%s was erased during its delivery; it stops here", record.reminder_id,
                record.merchant_id)
    return "gone"


def _stop(rt, record, timer: DueEntry, state: str, now: float, why: str, counter: str) -> str:
    rt.ledger.finish(record.merchant_id, record.customer_id, record.reminder_id, state, now, error=why, counter=counter)
    rt.due.remove([timer])
    if state == DEAD:
        metrics.REMINDERS.labels("dead", "any").inc()
        log.error("reminder %s is a dead letter (merchant=%s customer=%s): %s", record.reminder_id,
                  record.merchant_id, record.customer_id, why)
    return state

