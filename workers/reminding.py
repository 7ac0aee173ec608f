"""From a customer's lots to reminders queued, held or scheduled; the sweep; the outcome counts.

after_read  a fresh read: settle points saved/lost against the previous read, remember the
            lots, then evaluate
evaluate    plan (service/domain/schedule.py) and act: queue what is due for delivery
            (workers/delivery.py), put holds and wake-ups into the due set (service/state/due_set.py);
            opt-out and paused stores queue nothing
sweep       Celery beat's job: claim due entries atomically and act on each customer's:
            - a delivery's timer ran out (its worker died, its message was lost, or it waits
              for a retry): publish the delivery again;
            - a held reminder or a wake-up: re-check the customer against lots no older than
              REMINDER_RECHECK_MAX_AGE (a fresh read through the budget when they are older)
              and evaluate again. An entry waiting for that read stays in the due set until the
              read has planned again, so a read that is dropped or fails loses nothing; once it
              has, the entries it answered are done (the plan schedules again what is still
              due), so an entry is re-read once per re-check, and counted once.

Keys (service/state/keys.py): the profile's `L` fields (service/state/last_read.py; `lots:<c>` for a
read too big for them) the last read's lots and when it was read; `recheck:<c>`
the entries (`<stage>:<reminder key>`) waiting for a fresh read; `stats` the outcome counters,
per stage.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from service.state import holdout, last_read, store_figures
from service.config import metrics
from service.domain.events import Customer
from service.domain.expiry import stage_of
from service.domain.loyalty import Lot, _lot_from, _lot_record, _lots_from_json, _lots_json
from service.ops.cancel import cancel_pending
from service.domain.outcomes import settle, snapshot
from service.domain.reminders import build_reminder, reminder_id
from service.domain.schedule import SETTLE_STAGE, eligible, plan
from service.config.settings import RECHECK_WAIT_SECONDS
from service.domain.store_policy import policy_for
from workers.delivery import PAUSED_RETRY_SECONDS, arm, lease_seconds, queue_reminder
from service.state.due_set import REMINDER_KEY_HEX, DueEntry
from service.state.ledger import CANCELLED, LIVE, Marks, count_stat, parse_marks
from service.clients.oauth import usable
from service.ops.runtime import Runtime

log = logging.getLogger(__name__)

SENT_MARK_MARGIN_SECONDS = 2 * 24 * 3600
WAKEUP_KEY = "0" * 12  # due-set entries that only say "look again"; holds and deliveries carry the id
# Held reminders opening at the same minute are spread over at most this many seconds, earliest
# expiry first; the sweep claims that far ahead so that none waits for the next tick.
TIEBREAK_MAX_SECONDS = 5.0
# An entry waiting for a re-check read comes back RECHECK_WAIT_SECONDS (service/config/settings.py,
# which bounds REMINDER_RECHECK_MAX_AGE by it) after asking for it, in case the read never plans
# again (dropped, failed for good, its store paused meanwhile).
KEEP_SECONDS = 400 * 24 * 3600
SWEEP_TIME_BUDGET_SECONDS = 20.0
KNOWN_STATUSES = {"مؤكدة"}  # the only status Salla documents ("confirmed")
_seen_statuses: set[str] = set()


# -- the last read, per customer --------------------------------------------------------------
def save_lots(rt: Runtime, m: int, c: int, lots: list[Lot], read_at: datetime) -> None:
    # Kept in the profile (service/state/last_read.py): the lots live as long as the customer's
    # profile, DATA_RETENTION_DAYS after they were last seen (an event, a backfill listing), so a
    # resync read does not keep them alive forever.
    rt.last_read.save(m, c, lots, read_at)


def load_lots(rt: Runtime, m: int, c: int) -> tuple[float, list[Lot]] | None:
    return rt.last_read.load(m, c)


def reminded_marks(rt: Runtime, m: int, c: int) -> dict[str, int]:
    """Lot key -> the nearest stage a *sent* reminder named it at."""
    return rt.ledger.marks(m, c).sent


def stages_sent(rt: Runtime, m: int, c: int) -> dict[int, float]:
    return rt.ledger.marks(m, c).stage_times


def count(rt: Runtime, m: int, stage: int, name: str, amount: int = 1) -> None:
    count_stat(rt.store, rt.keys, m, stage, name, amount)


# -- the decisions ----------------------------------------------------------------------------
def after_read(rt: Runtime, m: int, customer: Customer, lots: list[Lot], now: datetime, publish,
               config: dict | None = None) -> list[dict]:
    # What the last read left, in one round trip (the customer's keys share one slot): the lots
    # (in the profile, or `lots:<c>` of the previous form) and the marks.
    k = rt.keys.store(m)
    pipe = rt.store.pipeline(transaction=False)
    rt.last_read.read(pipe, m, customer.id)
    pipe.hgetall(k.marks(customer.id))
    raw_profile, raw_lots, raw_marks = pipe.execute()
    previous, known = last_read.parse(raw_profile, raw_lots), parse_marks(raw_marks)
    if previous is not None:
        read_at, before = previous
        outcome = settle(snapshot(before, datetime.fromtimestamp(read_at, timezone.utc)), lots, known.sent, now)
        for stage, points in outcome.saved.items():
            count(rt, m, stage, "points_saved", points)
            store_figures.record_saved(rt.store, rt.keys, m, stage, points, now.timestamp())
            if points > 0:
                metrics.POINTS_SAVED.labels(str(stage)).inc(points)
        for stage, points in outcome.lost.items():
            count(rt, m, stage, "points_lost", points)
    # The holdout's outcomes (both groups alike): lots this read shows over, per stage reached.
    for (group, stage), amounts in holdout.settle(rt.store, rt.keys.prefix, m, customer.id, raw_marks, lots,
                                                  now).items():
        for outcome, points in zip(("reached", "used", "lost"), amounts):
            metrics.HOLDOUT_POINTS.labels(stage, holdout.GROUPS[group], outcome).inc(points)
    _log_unknown_statuses(lots)
    # The new lots, and the entries waiting for this read (taken: a re-check is answered once).
    recheck_key = k.recheck(customer.id)
    pipe = rt.store.pipeline(transaction=True)
    rt.last_read.save(m, customer.id, lots, now, pipe=pipe)
    pipe.smembers(recheck_key)
    pipe.delete(recheck_key)
    answered = [_waiting_entry(m, customer.id, member) for member in pipe.execute()[1]]
    held_stages = {e.stage_days for e in answered if e.reminder_key != WAKEUP_KEY}
    return evaluate(rt, m, customer, lots, now, publish, known_marks=known, held_stages=held_stages, config=config,
                    answered=answered)


def _waiting_member(entry: DueEntry) -> str:
    return f"{entry.stage_days}:{entry.reminder_key}"


def _waiting_entry(m: int, c: int, member) -> DueEntry:
    stage, _, key = (member.decode() if isinstance(member, bytes) else str(member)).partition(":")
    # A bare stage (written before the entries were kept): a held reminder of that stage.
    return DueEntry(m, c, int(stage), key if len(key) == REMINDER_KEY_HEX else "f" * REMINDER_KEY_HEX)


def evaluate(rt: Runtime, m: int, customer: Customer, lots: list[Lot], now: datetime, publish,
             known_marks: Marks | None = None, held_stages: set[int] = frozenset(),
             config: dict | None = None, answered: list[DueEntry] = ()) -> list[dict]:
    """Plan and act. `publish(m, c, reminder_id)` hands a queued reminder to the delivery task.
    `answered`: due-set entries that waited for this read; what the plan does not schedule again
    is done (left there, each would come back and ask for another read)."""
    settings = rt.settings
    if customer.notifications_enabled is False:
        cancel_customer(rt, m, customer.id, now.timestamp())
        return []
    config = rt.registry.config(m) if config is None else config  # the read's, when it read them
    if config.get("paused"):
        # Nothing goes out; look again later, so that resuming the store needs no new event.
        rt.due.schedule([(now.timestamp() + PAUSED_RETRY_SECONDS, DueEntry(m, customer.id, SETTLE_STAGE, WAKEUP_KEY))])
        return []
    known = known_marks or rt.ledger.marks(m, customer.id)
    # The store's own zone, quiet hours, stages, minimum and exclusions; the environment's
    # where it set none (service/domain/store_policy.py).
    policy = policy_for(settings, config)
    decision = plan(lots, now, policy.stages_days, policy.timezone, policy.quiet_hours,
                    known.named, policy.min_points, policy.excluded_statuses,
                    stage_sent=known.stage_times, lookahead=timedelta(seconds=settings.reminder_lookahead_seconds))
    # The customer's language when Salla gives it, else the store's, else REMINDER_LANGUAGE.
    language = customer.lang or policy.language
    queued = []
    # The holdout decides here, where a reminder is queued, and nowhere else: both groups have
    # gone through the same planning (stages, lots, quiet hours, pauses), so what they would
    # get is the same and both are counted the same way (service/state/holdout.py).
    held_out = bool(decision.send_now) and holdout.is_held_out(rt.store, settings, m, customer.id,
                                                               policy.holdout_percent)
    if held_out:
        for group in decision.send_now:
            keep = int((max(lot.expires_at for lot in group.lots) - now).total_seconds()) + SENT_MARK_MARGIN_SECONDS
            rid = reminder_id(m, customer.id, group.stage_days, (lot.key for lot in group.lots))
            record = holdout.held_out_record(m, customer.id, rid, group.stage_days, group.lots)
            if rt.ledger.hold_out(record, keep, now.timestamp()) == "created":
                holdout.note_reached(rt.store, rt.keys.prefix, m, customer.id, holdout.HELD_OUT, group.stage_days,
                                     group.lots)
                metrics.HOLDOUT_REMINDERS.labels(str(group.stage_days), "held_out").inc()
    elif decision.send_now:
        # Every stage due now goes out as one message: the nearest expiry first, the others with it
        # (the ledger still marks each stage's lots at their own stage).
        first, *others = decision.send_now
        reminder = build_reminder(m, customer, first, language, now, policy.point_value_sar, policy.store_name,
                                  others=others)
        last_expiry = max(lot.expires_at for group in decision.send_now for lot in group.lots)
        keep = int((last_expiry - now).total_seconds()) + SENT_MARK_MARGIN_SECONDS
        if queue_reminder(rt, reminder, keep, now.timestamp(), publish) == "created":
            queued.append(reminder)
            if policy.holdout_percent > 0:  # the comparison needs both groups over the same time
                for group in decision.send_now:
                    holdout.note_reached(rt.store, rt.keys.prefix, m, customer.id, holdout.REMINDED,
                                         group.stage_days, group.lots)
                    metrics.HOLDOUT_REMINDERS.labels(str(group.stage_days), "reminded").inc()
    entries = []
    for send_at, group in decision.hold:
        held_id = reminder_id(m, customer.id, group.stage_days, (lot.key for lot in group.lots))
        # Many holds open at the same minute: earliest expiry first (a few seconds apart at most).
        tiebreak = min(max((group.earliest_expiry - send_at).total_seconds(), 0.0) / 1e6, TIEBREAK_MAX_SECONDS)
        entries.append((send_at.timestamp() + tiebreak, DueEntry.for_reminder(m, customer.id, group.stage_days, held_id)))
    # The earliest wake-up only: it plans again from the lots and schedules the next one, so the
    # later ones would wait in the due set (~240 bytes each, issue 18) for nothing.
    entries += [(when.timestamp(), DueEntry(m, customer.id, stage, WAKEUP_KEY))
                for when, stage in sorted(decision.wakeups)[:1]]
    if entries:
        rt.due.schedule(entries)
    planned = {entry for _, entry in entries}
    done = [entry for entry in answered if entry not in planned]
    if done:
        # A held entry and the delivery timer of the reminder it became are one member: a timer
        # of a reminder on its way (queued just now, say) stays.
        on_its_way = rt.ledger.marks(m, customer.id)
        rt.due.remove([entry for entry in done if on_its_way.claim_for(entry.reminder_key) is None])
    # A held reminder re-checked with nothing left in its stage: the points were used first.
    for stage in held_stages:
        if not any(_stage_has_lots(lots, now, nearer, policy) for nearer in policy.stages_days
                   if nearer <= stage):
            count(rt, m, stage, "redeemed_before_reminder")
    return queued


def cancel_customer(rt: Runtime, m: int, c: int, now: float) -> int:
    """Opted out: every scheduled entry and every reminder on its way is cancelled (and counted)."""
    return cancel_pending(rt.ledger, rt.due, rt.store, rt.keys, m, c, now)


def _stage_has_lots(lots, now, stage, policy) -> bool:
    return any(stage_of(lot, now, policy.stages_days) == stage
               for lot in eligible(lots, now, policy.excluded_statuses))


def _log_unknown_statuses(lots: list[Lot]) -> None:
    for lot in lots:
        if lot.status not in KNOWN_STATUSES and lot.status not in _seen_statuses:
            _seen_statuses.add(lot.status)
            log.warning("loyalty status not seen before: %r (REMINDER_EXCLUDED_STATUSES lists those never reminded)",
                        lot.status)


# -- the sweep --------------------------------------------------------------------------------
@dataclass
class SweepResult:
    claimed: int = 0
    evaluated: int = 0
    reads_requested: int = 0
    deliveries_published: int = 0
    skipped: int = 0
    sent: list[dict] = field(default_factory=list)


def sweep(rt: Runtime, now: datetime, publish, request_read, batch: int = 1000, max_batches: int = 50,
          time_budget: float = SWEEP_TIME_BUDGET_SECONDS) -> SweepResult:
    """Claim what is due (atomically: two sweepers never get the same entry) and act on it.

    A customer whose handling fails is left unacked: the lease runs out and a later sweep
    tries again, while the rest of the batch goes on. A sweep stops after `time_budget`
    seconds and leaves the rest to the next tick: a task that ran past the broker's visibility
    timeout would be handed to a second worker.
    """
    result = SweepResult()
    started = time.monotonic()
    for _ in range(max_batches):
        if time.monotonic() - started > time_budget:
            break
        claimed = rt.due.claim(now.timestamp() + TIEBREAK_MAX_SECONDS, batch)
        if not claimed:
            break
        result.claimed += len(claimed)
        by_customer: dict[tuple[int, int], list[DueEntry]] = {}
        for entry in claimed:
            by_customer.setdefault((entry.merchant_id, entry.customer_id), []).append(entry)
        done: list[DueEntry] = []
        for (m, c), entries in by_customer.items():
            try:
                _act(rt, m, c, entries, now, publish, request_read, result)
            except Exception:
                log.exception("sweep: merchant=%s customer=%s failed; retried when its lease ends", m, c)
                continue
            done += entries
        rt.due.ack(done)
    return result


def _act(rt: Runtime, m: int, c: int, entries: list[DueEntry], now: datetime, publish, request_read,
         result: SweepResult) -> None:
    registry, moment = rt.registry, now.timestamp()
    if registry.is_uninstalled(m):
        result.skipped += 1  # its entries were dropped at uninstall; these raced it
        return
    marks = rt.ledger.marks(m, c)
    # Deliveries on their way whose timer ran out: publish again. They need nothing from Salla,
    # so they go whatever the store's state (deliver() itself checks pause and opt-out).
    rest = []
    for entry in entries:
        rid = marks.claim_for(entry.reminder_key) if entry.reminder_key != WAKEUP_KEY else None
        if rid is None:
            rest.append(entry)
            continue
        record = rt.ledger.get(m, rid)
        if record is not None and record.state in LIVE:
            arm(rt, entry, moment + lease_seconds(rt))
            publish(m, c, rid)
            result.deliveries_published += 1
    if not rest:
        return
    later = None
    if not usable(registry, m):
        later = PAUSED_RETRY_SECONDS  # needs re-authorization: keep the work, look again
    elif registry.loyalty_missing(m):
        later = rt.settings.loyalty_missing_retry_seconds
    elif registry.config(m).get("paused"):
        later = PAUSED_RETRY_SECONDS  # no reads and no reminders for a paused store
    if later is not None:
        rt.due.schedule([(moment + later, entry) for entry in rest])
        result.skipped += 1
        return
    held = {e.stage_days for e in rest if e.reminder_key != WAKEUP_KEY}
    cached = load_lots(rt, m, c)
    fresh_enough = cached is not None and moment - cached[0] <= rt.settings.reminder_recheck_max_age_seconds
    if fresh_enough:
        customer = rt.profiles.load(m, c)
        result.sent += evaluate(rt, m, customer, cached[1], now, publish, known_marks=marks, held_stages=held)
        result.evaluated += 1
        return
    key = rt.keys.store(m).recheck(c)
    pipe = rt.store.pipeline(transaction=True)
    pipe.sadd(key, *(_waiting_member(entry) for entry in rest))
    pipe.expire(key, 86400)  # a read that never comes must not leave it forever
    pipe.execute()
    # The entries stay, due again later: the read's plan replaces them or ends them (after_read),
    # and if the read is dropped or fails for good they come back and ask again.
    rt.due.schedule([(moment + RECHECK_WAIT_SECONDS, entry) for entry in rest])
    request_read(m, c)  # through the store's budget; after_read evaluates again
    result.reads_requested += 1
