"""The holdout: what reminders cause, measured against customers who get none (issue 17 §1).

Assignment. A store's `holdout_percent` (else HOLDOUT_PERCENT, 0-50) of its customers get no
reminder. Who they are is a keyed hash of (store, customer) under a deployment secret
(service/state/deployment_secrets.py, purpose "holdout"): nothing is stored per customer, nobody
without the secret can tell the groups apart, and a customer never switches group while the
percent stays (raising it moves some customers into the holdout, none out of it; the reverse
for lowering it).

Both groups go through the same planning (stages, lots, pauses): the decision is taken where a
reminder would be queued (workers/reminding.py). A held-out customer's would-be reminder is a
ledger record in state `held_out` (ids, points and times; no message, no channel).

Outcomes. When a lot reaches a stage, the points it has left are noted in the customer's
`marks` hash (`r:<S>:<lot>` = `<group>:<points>`), for either group. When a later read shows the
lot over (expired, or nothing left), each stage it reached settles: of the points it had there,
how many were used before expiry and how many were lost. The customer's settled totals per
group and stage are kept beside (`c:<group>:<S>:n|u`), and the store's `holdout` hash keeps the
running sums that service/domain/holdout_effect.py needs for a cluster-robust interval (clusters =
customers), so a report reads one hash whatever the store's size. Stage "all" counts each lot
once, at the first stage it reached: that comparison is the clean one. A later stage only
counts lots that still had points there, which the earlier reminders already thinned out in
the reminded group; its effect says how the groups differ there, not what that stage's
reminder alone did. Customers' totals live as long as their marks (past their last lot's
expiry): one who comes back much later counts as a new customer.

Points saved by reminders = effect ("all") x the points reminded (settled, first stage), and
their SAR value at the store's point_value_sar (else POINT_VALUE_SAR).
"""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Iterable

from service.state import deployment_secrets
from service.domain.holdout_effect import (MIN_CUSTOMERS_PER_GROUP, MIN_EFFECTIVE_CUSTOMERS, GroupSums,
                                           cluster_increments, customers_needed, effect, enough, lost_share,
                                           used_share)
from service.state.keys import Keys

PURPOSE = "holdout"
REMINDED, HELD_OUT = "r", "h"
GROUPS = {REMINDED: "reminded", HELD_OUT: "held_out"}
ALL = "all"
REACH, CUSTOMER = "r:", "c:"


# -- assignment -----------------------------------------------------------------------------------
def in_holdout(key: bytes, merchant_id: int, customer_id: int, percent: int) -> bool:
    """Pure: the customer's place in [0, 1) from the keyed hash, held out below percent / 100."""
    if percent <= 0:
        return False
    digest = hmac.new(key, f"{int(merchant_id)}:{int(customer_id)}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") < percent * 2**64 // 100


def assignment_key(redis, settings) -> bytes:
    return deployment_secrets.secret(redis, settings.redis_key_prefix, settings.token_encryption_keys, PURPOSE)


def is_held_out(redis, settings, merchant_id: int, customer_id: int, percent: int) -> bool:
    if percent <= 0:
        return False  # no secret is made for a deployment that never holds anyone out
    return in_holdout(assignment_key(redis, settings), merchant_id, customer_id, percent)


def held_out_record(merchant_id: int, customer_id: int, reminder_id: str, stage_days: int, lots) -> dict:
    """What the ledger keeps of a held-out reminder: ids, points and the stage; no message."""
    return {"reminder_id": reminder_id, "merchant_id": merchant_id, "customer_id": customer_id,
            "stage_days": stage_days, "points_expiring": sum(lot.remaining for lot in lots),
            "lots": [{"key": lot.key, "remaining_points": lot.remaining} for lot in lots]}


# -- outcomes, as they happen --------------------------------------------------------------------
def note_reached(redis, prefix: str, merchant_id: int, customer_id: int, group: str, stage: int, lots) -> None:
    """The lots reached `stage` in `group` with these points (the first note of a stage stays)."""
    marks = Keys(prefix).store(merchant_id).marks(customer_id)
    pipe = redis.pipeline(transaction=False)  # one key
    for lot in lots:
        pipe.hsetnx(marks, f"{REACH}{int(stage)}:{lot.key}", f"{group}:{lot.remaining}")
    pipe.execute()


def reached(raw_marks: dict) -> dict[str, dict[int, tuple[str, int]]]:
    """Pure: lot key -> {stage: (group, points at that stage)} from a customer's marks hash."""
    found: dict[str, dict[int, tuple[str, int]]] = {}
    for field, value in raw_marks.items():
        field = field.decode() if isinstance(field, bytes) else field
        if not field.startswith(REACH):
            continue
        value = value.decode() if isinstance(value, bytes) else value
        stage, _, lot_key = field[len(REACH):].partition(":")
        group, _, points = value.partition(":")
        found.setdefault(lot_key, {})[int(stage)] = (group, int(points))
    return found


def settled(reach: dict[str, dict[int, tuple[str, int]]], lots: Iterable, now: datetime
            ) -> tuple[dict[tuple[str, str], tuple[int, int, int]], list[str]]:
    """Pure: of the noted lots, those now over (expired, or nothing left), as (group, stage) ->
    (points reached, used, lost) summed over them, with the marks fields they settle. A lot the
    read no longer shows is left alone (nothing is known of it)."""
    by_key = {lot.key: lot for lot in lots}
    totals: dict[tuple[str, str], list[int]] = {}
    fields = []
    for lot_key, stages in reach.items():
        lot = by_key.get(lot_key)
        if lot is None:
            continue
        expired = lot.expires_at <= now
        if not expired and lot.remaining > 0:
            continue
        left = lot.remaining if expired else 0
        first = max(stages)  # the stage it reached first
        for stage, (group, points) in stages.items():
            lost = min(left, points)
            outcome = (points, points - lost, lost)  # points can only be used before they expire
            labels = [str(stage)] + ([ALL] if stage == first else [])
            for label in labels:
                total = totals.setdefault((group, label), [0, 0, 0])
                for i in range(3):
                    total[i] += outcome[i]
            fields.append(f"{REACH}{stage}:{lot_key}")
    return {key: tuple(value) for key, value in totals.items()}, fields


def settle(redis, prefix: str, merchant_id: int, customer_id: int, raw_marks: dict, lots, now: datetime) -> dict:
    """Settle what the read shows over (see settled) into the store's sums. Returns the
    (group, stage) -> (points, used, lost) it counted, for the metrics."""
    outcomes, fields = settled(reached(raw_marks), lots, now)
    if not fields:
        return {}
    k = Keys(prefix).store(merchant_id)
    marks = k.marks(customer_id)
    # Taken first, as one step: a read settling the same lots at the same time finds them gone.
    if redis.hdel(marks, *fields) != len(fields):
        return {}
    pipe = redis.pipeline(transaction=True)  # the customer's totals, each pair read as it moves
    order = sorted(outcomes)
    for group, label in order:
        points, used, _ = outcomes[(group, label)]
        pipe.hincrby(marks, f"{CUSTOMER}{group}:{label}:n", points)
        pipe.hincrby(marks, f"{CUSTOMER}{group}:{label}:u", used)
    answers = pipe.execute()
    pipe = redis.pipeline(transaction=True)  # the store's hash: same slot as the marks
    for index, (group, label) in enumerate(order):
        points, used, lost = outcomes[(group, label)]
        new_points, new_used = int(answers[2 * index]), int(answers[2 * index + 1])
        for name, amount in cluster_increments(new_points - points, new_used - used, points, used, lost).items():
            if amount:
                pipe.hincrby(k.holdout, f"{group}:{label}:{name}", amount)
    pipe.execute()
    return outcomes


# -- reading the sums -----------------------------------------------------------------------------
def parse_sums(raw: dict) -> dict[tuple[str, str], GroupSums]:
    """Pure: the store's `holdout` hash as (group, stage label) -> GroupSums."""
    values: dict[tuple[str, str], dict[str, int]] = {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        parts = field.split(":")
        if len(parts) != 3 or parts[2] not in GroupSums.FIELDS:
            continue
        values.setdefault((parts[0], parts[1]), {})[parts[2]] = int(value)
    return {key: GroupSums(**fields) for key, fields in values.items()}


def add(a: GroupSums, b: GroupSums) -> GroupSums:
    """Two stores' sums together (their customers are different clusters)."""
    return GroupSums(*(getattr(a, name) + getattr(b, name) for name in GroupSums.FIELDS))


def _group_view(sums: GroupSums) -> dict:
    return {"customers": sums.customers, "points": sums.points, "used_share": used_share(sums),
            "lost_share": lost_share(sums)}


def compare(reminded: GroupSums, held_out: GroupSums, percent: int) -> dict:
    """Pure: one comparison (a stage, or "all") as the report shows it."""
    view = {"status": "ok", "customers_needed": None, "reminded": _group_view(reminded),
            "held_out": _group_view(held_out), "effect": None, "ci95": None}
    if percent <= 0 and held_out.customers == 0:
        view["status"] = "off"
        return view
    found = effect(reminded, held_out) if enough(reminded, held_out) else None
    if found is None:
        view["status"] = "not_enough_data"
        view["customers_needed"] = customers_needed(reminded, held_out, percent)
        return view
    view["effect"], view["ci95"] = found
    return view


def report(sums: dict[tuple[str, str], GroupSums], percent: int, stages: Iterable[int], point_value_sar: float
           ) -> dict:
    """Pure: the store's report from its sums (store_report's contract)."""
    empty = GroupSums()
    overall = compare(sums.get((REMINDED, ALL), empty), sums.get((HELD_OUT, ALL), empty), percent)
    has_held_out = any(group == HELD_OUT and value.customers for (group, _), value in sums.items())
    labels = {int(label) for _, label in sums if label != ALL} | {int(s) for s in stages}
    status = "off" if percent <= 0 and not has_held_out else overall["status"]
    points_reminded = overall["reminded"]["points"]
    saved = overall["effect"] * points_reminded if status == "ok" else None
    result = {
        "percent": int(percent), "status": status,
        "customers_needed": overall["customers_needed"] if status == "not_enough_data" else None,
        "effect": overall["effect"] if status == "ok" else None,
        "ci95": overall["ci95"] if status == "ok" else None,
        "points_reminded": points_reminded,
        "points_saved": saved,
        "sar_saved": round(saved * point_value_sar, 2) if saved is not None and point_value_sar > 0 else None,
        "stages": [],
        # beyond the contract: what the figures rest on
        "reminded": overall["reminded"], "held_out": overall["held_out"],
        "min_customers_per_group": MIN_CUSTOMERS_PER_GROUP, "min_effective_customers": MIN_EFFECTIVE_CUSTOMERS,
        "point_value_sar": point_value_sar,
    }
    for stage in sorted(labels, reverse=True):
        view = compare(sums.get((REMINDED, str(stage)), empty), sums.get((HELD_OUT, str(stage)), empty), percent)
        if status == "off":
            view["status"] = "off"
        result["stages"].append({"stage_days": stage, **view})
    return result


def store_report(redis, prefix: str, merchant_id: int, settings, now: float) -> dict:
    """The store's holdout result: the contract the merchant's page and the admin API read.
    One HGETALL of the store's sums and one of its settings, whatever its size."""
    from service.domain.store_policy import policy_for
    from service.state.stores import StoreRegistry

    policy = policy_for(settings, StoreRegistry(redis, prefix).config(merchant_id))
    sums = parse_sums(redis.hgetall(Keys(prefix).store(merchant_id).holdout))
    return {**report(sums, policy.holdout_percent, policy.stages_days, policy.point_value_sar), "as_of": now}


def pooled_by_stage(redis, prefix: str, merchants: Iterable[int]) -> dict[tuple[str, str], GroupSums]:
    """Every store's sums added up per group and stage (Prometheus: no store label)."""
    keys = Keys(prefix)
    merchants = list(merchants)
    pipe = redis.pipeline(transaction=False)  # one slot per store on a cluster
    for m in merchants:
        pipe.hgetall(keys.store(m).holdout)
    pooled: dict[tuple[str, str], GroupSums] = {}
    for raw in pipe.execute():
        for key, value in parse_sums(raw).items():
            pooled[key] = add(pooled.get(key, GroupSums()), value)
    return pooled
