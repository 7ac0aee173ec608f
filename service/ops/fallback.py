"""A channel that accepted a reminder and reported it failed later: on to the next channel.

A provider can take a message (HTTP 200 and an id) and say later, in a status webhook or a
delivery report, that it never arrived. Under the policy `first` the reminder would then reach
nobody although the store lists further channels. Here the late failure is recorded as the
channel's failure (`ch:<name>` = failed:<reason>: ...) and, when a later channel of the store's
list has not been tried, the reminder is reopened in the ledger and delivered again from that
channel: a timer in the due set (at once, or when the quiet hours end) and a publish, as a
retry is (workers/delivery.py), so a lost publish is recovered by the sweep. The per-channel
claims keep every channel to one send; the ledger's compare-and-set on `ch:<name> = sent`
makes a failure delivered twice, or raced by a second web process, move on once.

Statistics: "reminded" means a channel accepted it. The lots stay marked and `reminders_sent`
stays counted once from the first channel's send; the second attempt to reach the same person
is counted in the store's counter `fallbacks_after_failure`. When every channel has failed
(late or at once), the reminder ends a dead letter as a synchronous refusal would.

`classify_*` and `decide` are pure; `handle_late_failure` is the I/O edge (plain Redis parts:
the web process calls it from service/web/callbacks.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from service.domain.send_window import next_send_time
from service.domain.sms_reports import STATES as SMS_STATES
from service.state.due_set import DueEntry
from service.state.ledger import LIVE, SENT
from service.clients.providers.base import OPTED_OUT, RATE_LIMITED, REFUSED, SETUP, TEMPLATE, UNDELIVERABLE
from service.clients.providers.whatsapp import RATE_LIMITS, SETUP_CODES, TEMPLATE_CODES, UNDELIVERABLE_CODES

log = logging.getLogger(__name__)

FIRST = "first"
MOVE_ON, DEAD, RECORD, NONE = "move_on", "dead", "record", "none"
KEPT_STATUSES = frozenset({"delivered", "read"})  # reached the shopper: a later failure does not undo it

# WhatsApp `failed` statuses are final for that message: Meta does not try it again, whatever
# the code. So every code moves on, the rate and quality limits too (the message will never be
# retried by Meta), except where the shopper said no: 131050, they stopped this business's
# marketing messages on WhatsApp, and an SMS in its place would go against that choice.
WHATSAPP_REFUSED_CODES = frozenset({
    131049,  # Meta chose not to deliver (healthy ecosystem engagement / marketing limits)
    130472,  # the shopper's number is part of a Meta experiment: not sent
    131047,  # re-engagement: more than 24 hours since the shopper last replied
    131000, 131016, 1, 2,  # something went wrong / service unavailable: still final for this message
})  # the account locked, unpaid or blocked (131031, 131042, 368) is the store's set-up: SETUP_CODES
WHATSAPP_TEMPLATE_CODES = TEMPLATE_CODES | {132005, 132007, 132012, 132068, 132069}
WHATSAPP_STAYS = {131050: OPTED_OUT}

# SMS delivery reports (service/domain/sms_reports.py reads the providers' documented words): each
# failure there is final at the carrier (no more tries), so each moves on.
SMS_FAILED_REASONS = {word: reason for word, (_, reason) in SMS_STATES.items() if reason}


@dataclass(frozen=True)
class LateFailure:
    reason: str  # a reason of service/clients/providers/base.py (the failed-by-reason counts read it)
    moves_on: bool
    detail: str  # the provider's code or word: ids and codes only, never an address


@dataclass(frozen=True)
class Decision:
    action: str  # MOVE_ON | DEAD | RECORD | NONE
    next_channel: str | None
    why: str


def classify_whatsapp(errors) -> LateFailure:
    """A WhatsApp status webhook's `failed`, from its `errors[]`."""
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = first.get("code")
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    detail = f"WhatsApp error {code}" if code is not None else "WhatsApp failed (no error code)"
    if code in WHATSAPP_STAYS:
        return LateFailure(WHATSAPP_STAYS[code], False, detail)
    if code in UNDELIVERABLE_CODES:
        return LateFailure(UNDELIVERABLE, True, detail)
    if code in SETUP_CODES:  # 100 "Invalid parameter" and the like: the store's set-up, not the shopper
        return LateFailure(SETUP, True, detail)
    if code in WHATSAPP_TEMPLATE_CODES:
        return LateFailure(TEMPLATE, True, detail)
    if code in RATE_LIMITS:
        return LateFailure(RATE_LIMITED, True, detail)
    # 131049, 130472, 131047 and the rest, known or not: final, so on to the next channel.
    return LateFailure(REFUSED, True, detail)


def classify_sms(raw_status: str) -> LateFailure | None:
    """An SMS delivery report's status word (lower case); None when it is not a failure."""
    reason = SMS_FAILED_REASONS.get(raw_status)
    return LateFailure(reason, True, f"SMS report {raw_status}") if reason else None


def failure_of(status: dict) -> LateFailure | None:
    """The failure a status kept by service/state/message_index.py reports (None: not a failure). It
    keeps the provider's own words (`errors` of WhatsApp, the SMS report's `word`), classified here."""
    if status.get("status") != "failed":
        return None
    if status.get("channel") == "whatsapp":
        return classify_whatsapp(status.get("errors"))
    return classify_sms(str(status.get("word", "")))


def decide(record, order: list[str], policy: str, channel: str, failure: LateFailure) -> Decision:
    """What a late failure of `channel` does to the reminder `record` (service/state/ledger.py Record),
    given the store's channels in its order and its policy."""
    if record is None:
        return Decision(NONE, None, "no such reminder")
    if not failure.moves_on:
        return Decision(NONE, None, f"{failure.reason}: not a failure that moves on")
    if record.channels.get(channel) != "sent":
        return Decision(NONE, None, f"{channel} did not send it, or its failure is already recorded")
    if (record.statuses or {}).get(channel, {}).get("status") in KEPT_STATUSES:
        return Decision(NONE, None, f"{channel} delivered it before failing: it is kept")
    if record.state not in LIVE and record.state != SENT:
        return Decision(NONE, None, f"the reminder is {record.state}")
    others = {name: outcome for name, outcome in record.channels.items() if name != channel}
    if any(outcome == "sent" for outcome in others.values()):
        return Decision(RECORD, None, "another channel reached the shopper")
    in_flight = [name for name, outcome in others.items() if not outcome.startswith("failed:")]
    if policy == FIRST:
        later = order[order.index(channel) + 1:] if channel in order else list(order)
        untried = [name for name in later if name not in record.channels]
        if untried:
            return Decision(MOVE_ON, untried[0], f"{channel} failed after accepting it: on to {untried[0]}")
    if in_flight:
        return Decision(RECORD, None, "another channel is still on its way")
    if policy == FIRST and any(name not in record.channels for name in order):
        # Untried channels before it only (the store reordered its list): the next attempt tries them.
        return Decision(MOVE_ON, next(name for name in order if name not in record.channels),
                        f"{channel} failed after accepting it: on to an untried channel")
    return Decision(DEAD, None, "every channel failed")


def reopen_at(now: float, reminder: dict, zone, quiet) -> float:
    """When the next channel may go out: now, or when the quiet hours end (the expiry rule of
    service/domain/send_window.py applies: it never waits past the points' expiry)."""
    moment = datetime.fromtimestamp(now, timezone.utc)
    expires = reminder.get("earliest_expiry")
    try:
        expires_at = datetime.fromisoformat(expires) if expires else None
    except (TypeError, ValueError):
        expires_at = None
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = None
    return next_send_time(moment, zone, quiet, expires_at=expires_at).timestamp()


def handle_late_failure(ledger, due, m: int, reminder_id: str, channel: str, failure: LateFailure,
                        order: list[str], policy: str, now: float, zone, quiet, publish) -> str:
    """Apply a late failure; returns what happened: 'moved_on', 'dead', 'recorded' or why not
    ('none', 'same', 'kept'). `publish(m, c, reminder_id)` hands the delivery to the workers;
    if it fails the timer publishes it."""
    record = ledger.get(m, reminder_id)
    decision = decide(record, order, policy, channel, failure)
    if decision.action == NONE:
        return NONE
    text = f"failed:{failure.reason}: {failure.detail} after the provider accepted it"
    claim = ledger.claim_json(record.reminder, now)
    result = ledger.late_failure(m, reminder_id, channel, text, decision.action, now, claim,
                                 f"{channel}: {failure.detail} after it was accepted; {decision.why}")
    timer = DueEntry.for_reminder(m, record.customer_id, record.stage, reminder_id)
    if result == "moved_on":
        when = reopen_at(now, record.reminder, zone, quiet)
        due.schedule([(when, timer)])  # first: a lost publish (or a quiet night) is the sweep's
        if when <= now:
            try:
                publish(m, record.customer_id, reminder_id)
            except Exception as exc:
                log.warning("reminder %s: fallback not published (%s); the sweep publishes it", reminder_id,
                            type(exc).__name__)
        log.info("reminder %s of merchant=%s: %s (%s); next channel %s at %.0f", reminder_id, m, decision.why,
                 failure.detail, decision.next_channel, when)
    elif result == "dead":
        due.remove([timer])
        log.error("reminder %s is a dead letter (merchant=%s customer=%s): %s failed late (%s), no channel left",
                  reminder_id, m, record.customer_id, channel, failure.detail)
    return result
