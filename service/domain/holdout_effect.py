"""What reminders cause, from the two groups' sums. Pure functions, plain Python.

The unit that is randomised is the customer, and a customer's points move together (one
shopper uses all their lots, or none), so the points are not independent draws: an interval
that treated each point, or each lot, as one would be far too narrow. Each group's used share
is a ratio of sums over customers, R = U / N = sum(u_i) / sum(n_i) (n_i: the points of customer
i's lots that reached the stage, u_i: of those, used before expiry).

Points are heavy-tailed (a few customers hold most of them), and then the textbook interval,
R +- z * cluster-robust standard error, is too narrow: the estimate and its estimated variance
move together (when the big customers happen not to have used their points, R is low and so is
its variance), and the variance, resting on a few big customers, is itself uncertain. Three
standard remedies, each computable from five running sums per group:

- Fieller's interval for each group's ratio (Fieller 1954): the set of R0 for which
  (U - R0 N)^2 <= q^2 * K / (K - 1) * sum((u_i - R0 n_i)^2), the variance taken at each
  candidate R0 and not only at the estimate. sum((u_i - R0 n_i)^2) = sum(u_i^2) - 2 R0 sum(u_i n_i) + R0^2 sum(n_i^2), so
  the bounds are the roots of a quadratic.
- q from Student's t with K_eff - 1 degrees of freedom, K_eff = N^2 / sum(n_i^2) the effective
  number of customers (K when all hold the same points, fewer when a few hold most).
- The two groups' intervals combined into one for the difference by MOVER (the method of
  variance estimates recovery, Zou & Donner 2008; Newcombe's for two proportions is one case):
  low = d - sqrt((R_r - low_r)^2 + (high_h - R_h)^2), high = d + sqrt((high_r - R_r)^2 +
  (R_h - low_h)^2), so each side keeps its own skew.

Measured on the simulated store of tests/unit/test_holdout.py (10 % held out of 2,000
customers, lognormal points, all-or-nothing use): over 20,000 stores each, the interval held
the true effect 95.2 % of the time and zero, where there was none, 95.1 % (the normal interval:
94.1 % and 94.2 %); with heavier-tailed points (lognormal sigma 1.5) 95.7 % and 95.6 % (the
normal one: 92.8 % and 92.0 %). tests/unit/test_holdout.py reruns 1,000 of them (slow).

The sums are kept as reminders settle (service/state/holdout.py) and a report reads them,
whatever the store's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

Z975 = 1.959963984540054  # the standard normal's 97.5th percentile
# Below this many customers in either group there is no number, only "not enough data yet".
MIN_CUSTOMERS_PER_GROUP = 50
# ... nor below this many effective customers (N^2 / sum(n_i^2)): with one customer holding
# most of a group's points, its share is that customer's choice, whatever the count.
MIN_EFFECTIVE_CUSTOMERS = 10


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


def effective_customers(group: GroupSums) -> float:
    """N^2 / sum(n_i^2): K when every customer holds the same points, fewer when a few hold most."""
    return group.points ** 2 / group.points_sq if group.points_sq > 0 else 0.0


def t975(df: float) -> float:
    """Student's t 97.5th percentile for df degrees of freedom: the Cornish-Fisher expansion
    (Abramowitz & Stegun 26.7.5), within 3e-4 of the exact value from df = 5 up."""
    z, v = Z975, float(df)
    z3, z5, z7, z9 = z ** 3, z ** 5, z ** 7, z ** 9
    return (z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v ** 2)
            + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v ** 3)
            + (79 * z9 + 776 * z7 + 1482 * z5 - 1920 * z3 - 945 * z) / (92160 * v ** 4))


def share_interval(group: GroupSums) -> tuple[float, float, float] | None:
    """The group's used share and its 95 % Fieller interval (module doc), clipped to [0, 1];
    None when the group is too small or too concentrated for one."""
    k, n, u = group.customers, group.points, group.used
    k_eff = effective_customers(group)
    if k < 2 or n <= 0 or k_eff < MIN_EFFECTIVE_CUSTOMERS:
        return None
    qq = t975(k_eff - 1) ** 2 * k / (k - 1)
    # (U - R N)^2 - qq (sum u^2 - 2 R sum un + R^2 sum n^2) <= 0, i.e. a R^2 - 2 b R + c <= 0
    a = n * n - qq * group.points_sq
    b = u * n - qq * group.used_points
    c = u * u - qq * group.used_sq
    if a <= 0:  # unbounded: not reached at MIN_EFFECTIVE_CUSTOMERS (needs K_eff > qq)
        return None
    root = math.sqrt(max(b * b - a * c, 0.0))
    share = u / n
    return share, max(min((b - root) / a, share), 0.0), min(max((b + root) / a, share), 1.0)


def effect(reminded: GroupSums, held_out: GroupSums) -> tuple[float, list[float]] | None:
    """Used share of the reminded minus that of the held out, and its 95 % interval (MOVER over
    the two Fieller intervals, module doc); None when either group cannot have one."""
    if min(reminded.customers, held_out.customers) < 2:
        return None
    r, h = share_interval(reminded), share_interval(held_out)
    if r is None or h is None:
        return None
    (share_r, low_r, high_r), (share_h, low_h, high_h) = r, h
    difference = share_r - share_h
    low = difference - math.hypot(share_r - low_r, high_h - share_h)
    high = difference + math.hypot(high_r - share_r, share_h - low_h)
    return difference, [low, high]


def _customers_short(group: GroupSums, minimum: int) -> int:
    """How many more customers the group needs for `minimum` customers and
    MIN_EFFECTIVE_CUSTOMERS effective ones (new customers taken to look like its present ones:
    the effective count grows in proportion)."""
    needed = minimum
    k_eff = effective_customers(group)
    if group.customers and 0 < k_eff < MIN_EFFECTIVE_CUSTOMERS:
        needed = max(needed, math.ceil(group.customers * MIN_EFFECTIVE_CUSTOMERS / k_eff))
    return max(needed - group.customers, 0)


def customers_needed(reminded: GroupSums, held_out: GroupSums, percent: int,
                     minimum: int = MIN_CUSTOMERS_PER_GROUP) -> int | None:
    """About how many more customers (with settled lots) until both groups are enough (above):
    new customers split percent / 100 - percent between the groups. None when the holdout is
    off (no new customer would join the held-out group)."""
    missing_held = _customers_short(held_out, minimum)
    missing_reminded = _customers_short(reminded, minimum)
    if missing_held and percent <= 0:
        return None
    needed = 0
    if missing_held:
        needed = max(needed, math.ceil(missing_held * 100 / percent))
    if missing_reminded:
        needed = max(needed, math.ceil(missing_reminded * 100 / (100 - percent)))
    return needed


def enough(reminded: GroupSums, held_out: GroupSums, minimum: int = MIN_CUSTOMERS_PER_GROUP) -> bool:
    """Both groups have `minimum` customers and MIN_EFFECTIVE_CUSTOMERS effective ones."""
    return all(group.customers >= minimum and effective_customers(group) >= MIN_EFFECTIVE_CUSTOMERS
               for group in (reminded, held_out))


def cluster_increments(old_points: int, old_used: int, points: int, used: int, lost: int) -> dict[str, int]:
    """How the group's sums move when one customer's totals go from (old_points, old_used) to
    (+points, +used), and `lost` more were lost: what service/state/holdout.py adds as lots settle."""
    new_points, new_used = old_points + points, old_used + used
    return {"customers": 1 if old_points <= 0 < new_points else 0, "points": points, "used": used, "lost": lost,
            "points_sq": new_points * new_points - old_points * old_points,
            "used_sq": new_used * new_used - old_used * old_used,
            "used_points": new_used * new_points - old_used * old_points}
