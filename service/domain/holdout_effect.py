"""What reminders cause, from the two groups' sums. Pure functions, plain Python.

The unit that is randomised is the customer, and a customer's points move together (one
shopper uses all their lots, or none), so the points are not independent draws: a
confidence interval that treated each point, or each lot, as one would be far too narrow.
Each group's used share is a ratio of sums over customers, R = sum(u_i) / sum(n_i) (n_i: the
points of customer i's lots that reached the stage, u_i: of those, used before expiry). Its
variance is the cluster-robust (linearised, "sandwich") one, clusters = customers:

    Var(R) = K / (K - 1) * sum((u_i - R n_i)^2) / (sum n_i)^2

and sum((u_i - R n_i)^2) = sum(u_i^2) - 2 R sum(u_i n_i) + R^2 sum(n_i^2), so five running sums
per group are all it needs: they are kept as reminders settle (service/state/holdout.py) and a
report reads them, whatever the store's size. The effect is R(reminded) - R(held out), the
groups independent, with a normal 95 % interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

Z95 = 1.959963984540054
# Below this many customers in either group the normal interval is not to be trusted (the
# sandwich variance is biased low with few clusters): the report says "not enough data yet".
MIN_CUSTOMERS_PER_GROUP = 50


@dataclass(frozen=True)
class GroupSums:
    """One group's running sums over its customers (n: points reached, u: used, l: lost)."""
    customers: int = 0
    points: int = 0
    used: int = 0
    lost: int = 0
    points_sq: int = 0  # sum of n_i^2
    used_sq: int = 0  # sum of u_i^2
    used_points: int = 0  # sum of u_i * n_i

    FIELDS = ("customers", "points", "used", "lost", "points_sq", "used_sq", "used_points")

    @classmethod
    def of(cls, customers: Iterable[tuple[int, int, int]]) -> "GroupSums":
        """From each customer's (points reached, used, lost): for tests and simulations."""
        k = n = u = lost = nn = uu = un = 0
        for points, used, gone in customers:
            if points <= 0:
                continue
            k, n, u, lost = k + 1, n + points, u + used, lost + gone
            nn, uu, un = nn + points * points, uu + used * used, un + used * points
        return cls(k, n, u, lost, nn, uu, un)


def used_share(group: GroupSums) -> float | None:
    return group.used / group.points if group.points > 0 else None


def lost_share(group: GroupSums) -> float | None:
    return group.lost / group.points if group.points > 0 else None


def share_variance(group: GroupSums) -> float | None:
    """The cluster-robust variance of the group's used share (module doc); None under 2 customers."""
    if group.customers < 2 or group.points <= 0:
        return None
    r = group.used / group.points
    residual = group.used_sq - 2 * r * group.used_points + r * r * group.points_sq
    return max(residual, 0.0) * group.customers / (group.customers - 1) / (group.points ** 2)


def effect(reminded: GroupSums, held_out: GroupSums) -> tuple[float, list[float]] | None:
    """Used share of the reminded minus that of the held out, and its 95 % interval; None
    when either group has too few customers to say."""
    if min(reminded.customers, held_out.customers) < 2:
        return None
    a, b = share_variance(reminded), share_variance(held_out)
    if a is None or b is None:
        return None
    difference = reminded.used / reminded.points - held_out.used / held_out.points
    half = Z95 * math.sqrt(a + b)
    return difference, [difference - half, difference + half]


def customers_needed(reminded: GroupSums, held_out: GroupSums, percent: int,
                     minimum: int = MIN_CUSTOMERS_PER_GROUP) -> int | None:
    """About how many more customers (with settled lots) until both groups have `minimum`:
    new customers split percent / 100 - percent between the groups. None when the holdout is
    off (no new customer would join the held-out group)."""
    missing_held = max(minimum - held_out.customers, 0)
    missing_reminded = max(minimum - reminded.customers, 0)
    if missing_held and percent <= 0:
        return None
    needed = 0
    if missing_held:
        needed = max(needed, math.ceil(missing_held * 100 / percent))
    if missing_reminded:
        needed = max(needed, math.ceil(missing_reminded * 100 / (100 - percent)))
    return needed


def enough(reminded: GroupSums, held_out: GroupSums, minimum: int = MIN_CUSTOMERS_PER_GROUP) -> bool:
    return min(reminded.customers, held_out.customers) >= minimum


def cluster_increments(old_points: int, old_used: int, points: int, used: int, lost: int) -> dict[str, int]:
    """How the group's sums move when one customer's totals go from (old_points, old_used) to
    (+points, +used), and `lost` more were lost: what service/state/holdout.py adds as lots settle."""
    new_points, new_used = old_points + points, old_used + used
    return {"customers": 1 if old_points <= 0 < new_points else 0, "points": points, "used": used, "lost": lost,
            "points_sq": new_points * new_points - old_points * old_points,
            "used_sq": new_used * new_used - old_used * old_used,
            "used_points": new_used * new_points - old_used * old_points}
