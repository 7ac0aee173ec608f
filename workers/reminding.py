"""From a customer's lots to reminders sent, held or scheduled; the sweep; the outcome counts.

after_read  a fresh read: settle points saved/lost against the previous read, remember the
            lots, then evaluate
evaluate    plan (service/schedule.py) and act: deliver what is due, put holds and wake-ups
            into the due set (workers/due_set.py); opt-out and paused stores send nothing
sweep       Celery beat's every-minute job: claim due entries atomically, re-check each
            customer against lots no older than REMINDER_RECHECK_MAX_AGE (a fresh read
            through the budget when they are older), and evaluate again

Redis keys (under REDIS_KEY_PREFIX): `lots:{m}:{c}` the last read's open lots and when it was
read; `recheck:{m}:{c}` stages whose held reminder waits for a fresh read; `stats:{m}` the
outcome counters, per stage.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from service.events import Customer
from service.loyalty import Lot
from service.outcomes import settle, snapshot
from service.reminders import build_reminder, reminder_id
from service.expiry import stage_of
from service.schedule import SETTLE_STAGE, eligible, plan
from workers.delivery import STAGE_FIELD, mark_reminded, reminded_key
from workers.due_set import DueEntry, DueSet
from workers.oauth import usable
from workers.runtime import Runtime

log = logging.getLogger(__name__)

SENT_MARK_MARGIN_SECONDS = 2 * 24 * 3600
WAKEUP_KEY = "0" * 12  # due-set entries that only say "look again"; holds carry the reminder id
# Held reminders opening at the same minute are spread over at most this many seconds, earliest
# expiry first; the sweep claims that far ahead so that none waits for the next tick.
TIEBREAK_MAX_SECONDS = 5.0
PAUSED_RETRY_SECONDS = 3600
KEEP_SECONDS = 400 * 24 * 3600
KNOWN_STATUSES = {"مؤكدة"}  # the only status Salla documents ("confirmed")
_seen_statuses: set[str] = set()


def due_set(rt: Runtime) -> DueSet:
    return DueSet(rt.store, rt.settings.redis_key_prefix)


# -- the last read, per customer --------------------------------------------------------------
def _lots_key(rt: Runtime, m: int, c: int) -> str:
    return f"{rt.settings.redis_key_prefix}lots:{m}:{c}"


def save_lots(rt: Runtime, m: int, c: int, lots: list[Lot], read_at: datetime) -> None:
    record = {"read_at": read_at.timestamp(), "lots": [_lot_record(lot) for lot in lots]}
    rt.store.set(_lots_key(rt, m, c), json.dumps(record, ensure_ascii=False), ex=KEEP_SECONDS)


def load_lots(rt: Runtime, m: int, c: int) -> tuple[float, list[Lot]] | None:
    raw = rt.store.get(_lots_key(rt, m, c))
    if raw is None:
        return None
    record = json.loads(raw)
    return record["read_at"], [_lot_from(item) for item in record["lots"]]


def _lot_record(lot: Lot) -> dict:
    return {"key": lot.key, "name": lot.name, "points": lot.points, "used_points": lot.used_points,
            "status": lot.status, "created_at": lot.created_at.isoformat(), "expires_at": lot.expires_at.isoformat(),
            "order_id": lot.order_id, "reference_id": lot.reference_id}


def _lot_from(item: dict) -> Lot:
    return Lot(key=item["key"], name=item["name"], points=item["points"], used_points=item["used_points"],
               status=item["status"], created_at=datetime.fromisoformat(item["created_at"]),
               expires_at=datetime.fromisoformat(item["expires_at"]), order_id=item["order_id"],
               reference_id=item["reference_id"])


def marks(rt: Runtime, m: int, c: int) -> tuple[dict[str, int], dict[int, float]]:
    """One read of `reminded:{m}:{c}`: lot key -> the nearest stage it was reminded at, and
    stage -> when this customer last had that stage's reminder."""
    lots, stages = {}, {}
    for k, v in rt.store.hgetall(reminded_key(rt.settings.redis_key_prefix, m, c)).items():
        if k.startswith(STAGE_FIELD):
            stages[int(k[len(STAGE_FIELD):])] = float(v)
        else:
            lots[k] = int(v)
    return lots, stages


def reminded_marks(rt: Runtime, m: int, c: int) -> dict[str, int]:
    return marks(rt, m, c)[0]


def stages_sent(rt: Runtime, m: int, c: int) -> dict[int, float]:
    return marks(rt, m, c)[1]


# -- outcome counters -------------------------------------------------------------------------
def stats_key(rt: Runtime, m: int) -> str:
    return f"{rt.settings.redis_key_prefix}stats:{m}"


def count_stat(rt: Runtime, m: int, stage: int, name: str, amount: int = 1) -> None:
    if amount:
        rt.store.hincrby(stats_key(rt, m), f"{stage}:{name}", amount)


def record_delivery(rt: Runtime, reminder: dict, report, keep_seconds: int) -> None:
    """Count a delivered reminder once, however many channels carried it."""
    m, stage = reminder["merchant_id"], reminder["stage_days"]
    first = report.sent and rt.store.set(f"{rt.settings.redis_key_prefix}reminder:counted:{reminder['reminder_id']}",
                                         "1", nx=True, ex=max(keep_seconds, 60))
    if first:
        rt.registry.count(m, "reminders_sent")
        count_stat(rt, m, stage, "reminders_sent")
        count_stat(rt, m, stage, "points_reminded", reminder["points_expiring"])


# -- the decisions ----------------------------------------------------------------------------
def after_read(rt: Runtime, m: int, customer: Customer, lots: list[Lot], now: datetime, send_reminder) -> list[dict]:
    previous = load_lots(rt, m, customer.id)
    known = marks(rt, m, customer.id)
    reminded = known[0]
    if previous is not None:
        read_at, before = previous
        outcome = settle(snapshot(before, datetime.fromtimestamp(read_at, timezone.utc)), lots, reminded, now)
        for stage, points in outcome.saved.items():
            count_stat(rt, m, stage, "points_saved", points)
        for stage, points in outcome.lost.items():
            count_stat(rt, m, stage, "points_lost", points)
    _log_unknown_statuses(lots)
    save_lots(rt, m, customer.id, lots, now)
    recheck_key = f"{rt.settings.redis_key_prefix}recheck:{m}:{customer.id}"
    pipe = rt.store.pipeline()
    pipe.smembers(recheck_key)
    pipe.delete(recheck_key)
    held_stages = {int(s) for s in pipe.execute()[0]}
    return evaluate(rt, m, customer, lots, now, send_reminder, known_marks=known, held_stages=held_stages)


def evaluate(rt: Runtime, m: int, customer: Customer, lots: list[Lot], now: datetime, send_reminder,
             known_marks: tuple[dict[str, int], dict[int, float]] | None = None,
             held_stages: set[int] = frozenset()) -> list[dict]:
    settings, due = rt.settings, due_set(rt)
    if customer.notifications_enabled is False:
        cancelled = due.cancel_customer(m, customer.id)
        count_stat(rt, m, 0, "opted_out_cancelled", cancelled)
        return []
    config = rt.registry.config(m)
    if config.get("paused"):
        # Nothing goes out; look again later, so that resuming the store needs no new event.
        due.schedule([(now.timestamp() + PAUSED_RETRY_SECONDS, DueEntry(m, customer.id, SETTLE_STAGE, WAKEUP_KEY))])
        return []
    reminded, stage_sent = known_marks or marks(rt, m, customer.id)
    decision = plan(lots, now, settings.reminder_stages_days, settings.store_timezone, settings.quiet_hours, reminded,
                    settings.reminder_min_points, settings.reminder_excluded_statuses, stage_sent=stage_sent)
    point_value = config.get("point_value_sar", settings.point_value_sar)
    sent = []
    for group in decision.send_now:
        reminder = build_reminder(m, customer, group, settings.reminder_language, now, point_value)
        keep = int((max(lot.expires_at for lot in group.lots) - now).total_seconds()) + SENT_MARK_MARGIN_SECONDS
        mark_reminded(rt.store, settings.redis_key_prefix, reminder, keep, now.timestamp())
        send_reminder(reminder, keep)
        sent.append(reminder)
    entries = []
    for send_at, group in decision.hold:
        held_id = reminder_id(m, customer.id, group.stage_days, (lot.key for lot in group.lots))
        # Many holds open at the same minute: earliest expiry first (a few seconds apart at most).
        tiebreak = min(max((group.earliest_expiry - send_at).total_seconds(), 0.0) / 1e6, TIEBREAK_MAX_SECONDS)
        entries.append((send_at.timestamp() + tiebreak, DueEntry.for_reminder(m, customer.id, group.stage_days, held_id)))
    entries += [(when.timestamp(), DueEntry(m, customer.id, stage, WAKEUP_KEY)) for when, stage in decision.wakeups]
    if entries:
        due.schedule(entries)
    # A held reminder re-checked with nothing left in its stage: the points were used first.
    for stage in held_stages:
        if not any(_stage_has_lots(lots, now, nearer, settings) for nearer in settings.reminder_stages_days
                   if nearer <= stage):
            count_stat(rt, m, stage, "redeemed_before_reminder")
    return sent


def _stage_has_lots(lots, now, stage, settings) -> bool:
    return any(stage_of(lot, now, settings.reminder_stages_days) == stage
               for lot in eligible(lots, now, settings.reminder_excluded_statuses))


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
    skipped: int = 0
    sent: list[dict] = field(default_factory=list)


def sweep(rt: Runtime, now: datetime, send_reminder, request_read, batch: int = 1000, max_batches: int = 50) -> SweepResult:
    """Claim what is due (atomically: two sweepers never get the same entry) and act on it.

    A customer whose handling fails is left unacked: the lease runs out and a later sweep
    tries again, while the rest of the batch goes on.
    """
    due, result = due_set(rt), SweepResult()
    for _ in range(max_batches):
        claimed = due.claim(now.timestamp() + TIEBREAK_MAX_SECONDS, batch)
        if not claimed:
            break
        result.claimed += len(claimed)
        by_customer: dict[tuple[int, int], list[DueEntry]] = {}
        for entry in claimed:
            by_customer.setdefault((entry.merchant_id, entry.customer_id), []).append(entry)
        done: list[DueEntry] = []
        for (m, c), entries in by_customer.items():
            try:
                _act(rt, m, c, entries, now, send_reminder, request_read, result)
            except Exception:
                log.exception("sweep: merchant=%s customer=%s failed; retried when its lease ends", m, c)
                continue
            done += entries
        due.ack(done)
    return result


def _act(rt: Runtime, m: int, c: int, entries: list[DueEntry], now: datetime, send_reminder, request_read,
         result: SweepResult) -> None:
    registry, due = rt.registry, due_set(rt)
    if registry.is_uninstalled(m):
        result.skipped += 1  # its entries were dropped at uninstall; these raced it
        return
    later = None
    if not usable(registry, m):
        later = PAUSED_RETRY_SECONDS  # needs re-authorization: keep the work, look again
    elif registry.loyalty_missing(m):
        later = rt.settings.loyalty_missing_retry_seconds
    elif registry.config(m).get("paused"):
        later = PAUSED_RETRY_SECONDS  # no reads and no reminders for a paused store
    if later is not None:
        due.schedule([(now.timestamp() + later, entry) for entry in entries])
        result.skipped += 1
        return
    held = {e.stage_days for e in entries if e.reminder_key != WAKEUP_KEY}
    cached = load_lots(rt, m, c)
    fresh_enough = cached is not None and now.timestamp() - cached[0] <= rt.settings.reminder_recheck_max_age_seconds
    if fresh_enough:
        customer = rt.profiles.load(m, c)
        result.sent += evaluate(rt, m, customer, cached[1], now, send_reminder, held_stages=held)
        result.evaluated += 1
        return
    if held:
        key = f"{rt.settings.redis_key_prefix}recheck:{m}:{c}"
        pipe = rt.store.pipeline()
        pipe.sadd(key, *held)
        pipe.expire(key, 86400)  # a read that never comes must not leave it forever
        pipe.execute()
    request_read(m, c)  # through the store's budget; after_read evaluates again
    result.reads_requested += 1
